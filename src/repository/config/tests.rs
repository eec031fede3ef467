//! Tests of the `config.toml` front end.

use super::*;

fn parse(text: &str) -> Result<ModelConfig, String> {
    ModelConfig::parse(Path::new("m/config.toml"), text)
}

#[test]
fn empty_config_has_defaults() {
    let c = parse("").unwrap();
    assert_eq!(
        c,
        ModelConfig {
            source: ConfigSource::Toml,
            ..ModelConfig::from_graph()
        }
    );
    assert!(c.dynamic_batching.enabled);
    assert_eq!(c.dynamic_batching.max_queue_size, DEFAULT_MAX_QUEUE_SIZE);
    assert_eq!(c.version_policy, VersionPolicy::Latest(1));
}

#[test]
fn full_config_parses() {
    let c = parse(
        r#"
max_batch_size = 16
instances = 2
gpus = [0, 1]
intra_op_threads = 1
fallback = true
version_policy = { specific = [1, 3] }

[[warmup]]
batch_size = 4
count = 2
random = true
dims = { x = [3] }

[dynamic_batching]
max_queue_delay_us = 500
preferred_batch_sizes = [4, 8]
max_queue_size = 10
default_timeout_us = 1000
priority_levels = 3
default_priority_level = 2

[[execution_providers]]
kind = "tensorrt"
device_id = 1
fp16 = true
engine_cache_path = "/tmp/trt"

[[execution_providers]]
kind = "cuda"
device_id = 1
memory_limit_bytes = 1073741824
arena_extend_strategy = "same_as_requested"
cudnn_conv_algo_search = "heuristic"

[[execution_providers]]
kind = "cpu"
"#,
    )
    .unwrap();
    assert_eq!(c.max_batch_size, Some(16));
    assert_eq!(c.gpus, vec![0, 1]);
    assert_eq!(c.execution_providers.len(), 3);
    assert_eq!(c.execution_providers[0].name(), "tensorrt");
    assert_eq!(
        c.execution_providers[2],
        ExecutionProvider::Cpu { arena: true }
    );
    assert_eq!(c.version_policy, VersionPolicy::Specific(vec![1, 3]));
    assert_eq!(c.dynamic_batching.preferred_batch_sizes, vec![4, 8]);
    let warmup = c.warmup.unwrap();
    assert_eq!(
        (warmup[0].batch_size, warmup[0].count, warmup[0].random),
        (4, 2, true)
    );
    assert_eq!(warmup[0].dims["x"], vec![3]);
}

#[test]
fn unknown_key_names_file_and_key() {
    let err = parse("max_batch = 3").unwrap_err();
    assert!(err.starts_with("m/config.toml:"), "{err}");
    assert!(err.contains("unknown field `max_batch`"), "{err}");
}

#[test]
fn unknown_provider_option_is_rejected() {
    let err = parse("[[execution_providers]]\nkind = \"cuda\"\nfp16 = true\n").unwrap_err();
    assert!(err.contains("fp16"), "{err}");
    let err = parse("[[execution_providers]]\nkind = \"rocm\"\n").unwrap_err();
    assert!(err.contains("rocm"), "{err}");
}

#[test]
fn bad_values_are_rejected() {
    for (text, needle) in [
        (
            "instances = 0",
            "`instances` must be between 1 and 256. Given: 0",
        ),
        ("max_batch_size = -1", "max_batch_size"),
        ("max_batch_size = \"8\"", "max_batch_size"),
        ("[dynamic_batching]\nmax_queue_size = 0", "max_queue_size"),
        (
            "[dynamic_batching]\npriority_levels = 2\ndefault_priority_level = 3",
            "default_priority_level",
        ),
        (
            "max_batch_size = 4\n[dynamic_batching]\npreferred_batch_sizes = [8]",
            "preferred_batch_sizes",
        ),
        ("version_policy = { latest = 0 }", "version_policy.latest"),
        ("version_policy = \"newest\"", "newest"),
        ("gpus = [0]", "needs a cuda or tensorrt entry"),
    ] {
        let err = parse(text).unwrap_err();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn version_policy_selects() {
    let disk = [1, 2, 3, 5];
    assert_eq!(VersionPolicy::Latest(1).select(&disk), vec![5]);
    assert_eq!(VersionPolicy::Latest(2).select(&disk), vec![3, 5]);
    assert_eq!(VersionPolicy::Latest(9).select(&disk), vec![1, 2, 3, 5]);
    assert_eq!(VersionPolicy::All.select(&disk), vec![1, 2, 3, 5]);
    assert_eq!(VersionPolicy::Specific(vec![2, 4]).select(&disk), vec![2]);
}

#[test]
fn queue_timeouts_follow_each_levels_policy() {
    use crate::repository::spec::{QueuePolicy, TimeoutAction};
    let us = Duration::from_micros;
    let mut b = DynamicBatching {
        default_timeout_us: 100,
        priority_levels: 2,
        ..DynamicBatching::default()
    };
    // config.toml's default: a request may shorten, never lengthen.
    assert_eq!(b.queue_timeout(1, None), Some(us(100)));
    assert_eq!(b.queue_timeout(1, Some(40)), Some(us(40)));
    assert_eq!(b.queue_timeout(1, Some(400)), Some(us(100)));
    b.priority_queue_policy.insert(
        2,
        QueuePolicy {
            max_queue_size: 0,
            default_timeout_us: 0,
            allow_timeout_override: false,
            timeout_action: TimeoutAction::Reject,
        },
    );
    // Level 2 allows no override: the request's timeout is ignored.
    assert_eq!(b.queue_timeout(2, Some(40)), None);
    b.allow_timeout_override = false;
    assert_eq!(b.queue_timeout(1, Some(40)), Some(us(100)));
}
