public import CairnCore
public import CairnServe
import NIOCore
import NIOSSL

/// The server's TLS identity and the CA its clients' certificates must chain to.
///
/// NBD over TCP reaches anyone who reaches the port, so Cairn asks for TLS with client
/// certificates (mutual TLS): a client is served only after it shows a certificate the CA
/// signed. The TLS starts inside the NBD handshake (`NBD_OPT_STARTTLS`, spec "TLS support"),
/// as QEMU's and libnbd's clients expect for `nbds://`.
public struct NBDTLSCredentials: Sendable {
    /// The server certificate (PEM), optionally followed by its intermediates.
    public var certificatePath: String
    /// The server certificate's private key (PEM).
    public var keyPath: String
    /// The CA certificate(s) (PEM) that clients' certificates are checked against.
    public var caPath: String

    public init(certificatePath: String, keyPath: String, caPath: String) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.caPath = caPath
    }

    /// Loads the files into the TLS set-up every connection of a server shares; names the file
    /// that is wrong.
    public func makeUpgrade() throws(CairnError) -> any NBDTLSUpgrade {
        NIOSSLUpgrade(context: try makeContext())
    }

    func makeContext() throws(CairnError) -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        } catch {
            throw CairnError(
                .usage, "--tls-cert \(certificatePath) is not a readable PEM certificate", cause: "\(error)")
        }
        guard !chain.isEmpty else {
            throw CairnError(.usage, "--tls-cert \(certificatePath) holds no PEM certificate")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw CairnError(.usage, "--tls-key \(keyPath) is not a readable PEM private key", cause: "\(error)")
        }
        let roots: [NIOSSLCertificate]
        do {
            roots = try NIOSSLCertificate.fromPEMFile(caPath)
        } catch {
            throw CairnError(.usage, "--tls-ca \(caPath) is not a readable PEM certificate", cause: "\(error)")
        }
        guard !roots.isEmpty else { throw CairnError(.usage, "--tls-ca \(caPath) holds no PEM certificate") }
        var configuration = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key),
            trustRoots: .certificates(roots))
        configuration.minimumTLSVersion = .tlsv12
        // A client that stops answering during the close cannot hold its connection long.
        configuration.shutdownTimeout = .seconds(2)
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw CairnError(
                .usage, "cannot set up TLS with --tls-cert \(certificatePath) and --tls-key \(keyPath)",
                cause: "\(error) (does the key belong to the certificate?)")
        }
    }
}

/// STARTTLS through swift-nio-ssl: one context (certificates, CA, TLS 1.2 or later) for every
/// connection.
struct NIOSSLUpgrade: NBDTLSUpgrade {
    let context: NIOSSLContext

    func addServerHandler(
        to pipeline: ChannelPipeline.SynchronousOperations, before handler: any ChannelHandler
    ) throws {
        try pipeline.addHandler(NIOSSLServerHandler(context: context), position: .before(handler))
    }

    func classify(_ error: any Error) -> NBDTLSFailure? {
        guard let tlsError = error as? NIOSSLError else { return nil }
        if case .uncleanShutdown = tlsError { return .peerLeft }
        return .failed
    }
}
