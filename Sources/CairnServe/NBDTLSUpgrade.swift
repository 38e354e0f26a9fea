public import NIOCore

/// What a connection needs of a TLS library for `NBD_OPT_STARTTLS`.
///
/// The NBD server speaks the protocol and leaves TLS to whoever provides this, so the protocol
/// module (and the fuzz target built on it) links no TLS library: `CairnServeTLS` provides it
/// with swift-nio-ssl (`NBDTLSCredentials.makeUpgrade()`).
public protocol NBDTLSUpgrade: Sendable {
    /// Puts a TLS server handler into `pipeline` ahead of `handler`; the TLS handshake then
    /// starts with the client's hello.
    func addServerHandler(
        to pipeline: ChannelPipeline.SynchronousOperations, before handler: any ChannelHandler
    ) throws

    /// What `error`, raised in a connection's pipeline, means if it is the TLS library's; nil if
    /// it is not.
    func classify(_ error: any Error) -> NBDTLSFailure?
}

/// A TLS library's error, as a connection treats it.
public enum NBDTLSFailure: Sendable {
    /// The client hung up without TLS's close_notify: it has just gone away, nothing to log.
    case peerLeft
    /// The handshake or the session failed (no client certificate, a bad record...).
    case failed
}
