"""Publishes to a real object store the way a user's CI would, with the store's own SDK.

    store.py s3|azure ENDPOINT create BUCKET
    store.py s3|azure ENDPOINT upload BUCKET LOCAL_DIR PREFIX   # every file; markers (.ready) last
    store.py s3|azure ENDPOINT put BUCKET KEY LOCAL_FILE
    store.py s3|azure ENDPOINT delete BUCKET PREFIX             # every object under PREFIX/

ENDPOINT is http://127.0.0.1:<port> of a moto server (s3) or of Azurite's blob service (azure).
The tests in tests/it/remote/ call it; the credentials are the emulators' public ones.
"""

import os
import sys

# Azurite's documented development account and key (public, the same in every Azurite).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
MARKER = ".ready"


class S3:
    def __init__(self, endpoint):
        import boto3

        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="sluice-test",
            aws_secret_access_key="sluice-test-secret",
            region_name="us-east-1",
        )

    def create(self, bucket):
        self.client.create_bucket(Bucket=bucket)

    def put(self, bucket, key, path):
        self.client.upload_file(path, bucket, key)

    def delete(self, bucket, prefix):
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
        for item in listed.get("Contents", []):
            self.client.delete_object(Bucket=bucket, Key=item["Key"])


class Azure:
    def __init__(self, endpoint):
        from azure.storage.blob import BlobServiceClient

        connection = (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
        )
        self.service = BlobServiceClient.from_connection_string(connection)

    def create(self, container):
        self.service.create_container(container)

    def put(self, container, key, path):
        with open(path, "rb") as f:
            self.service.get_blob_client(container, key).upload_blob(f, overwrite=True)

    def delete(self, container, prefix):
        client = self.service.get_container_client(container)
        for blob in client.list_blobs(name_starts_with=prefix + "/"):
            client.delete_blob(blob.name)


def upload(store, bucket, local, prefix):
    files = []
    for folder, _, names in os.walk(local):
        for name in names:
            path = os.path.join(folder, name)
            files.append((os.path.relpath(path, local).replace(os.sep, "/"), path))
    # Markers go last: a version is published only once all of its files are.
    files.sort(key=lambda f: (os.path.basename(f[0]) == MARKER, f[0]))
    for rel, path in files:
        store.put(bucket, f"{prefix}/{rel}" if prefix else rel, path)


def main(argv):
    kind, endpoint, command, *args = argv
    store = {"s3": S3, "azure": Azure}[kind](endpoint)
    if command == "create":
        store.create(*args)
    elif command == "upload":
        upload(store, *args)
    elif command == "put":
        store.put(*args)
    elif command == "delete":
        store.delete(*args)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
