//! What the gRPC layers know of a request's connection.

/// What tonic puts in every request's extensions: the addresses, and the
/// connection's request tracker for its idle timeout.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub(crate) tcp: tonic::transport::server::TcpConnectInfo,
    pub(crate) activity: std::sync::Arc<crate::net::Activity>,
}

/// A connection [`crate::net`] admitted, as tonic sees it.
impl tonic::transport::server::Connected for crate::net::Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnInfo {
            tcp: tonic::transport::server::TcpConnectInfo {
                local_addr: self.local,
                remote_addr: self.remote,
            },
            activity: self.activity(),
        }
    }
}
