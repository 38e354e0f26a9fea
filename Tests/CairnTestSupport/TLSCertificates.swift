import Foundation

/// Certificates for TLS tests, made at test time with the `openssl` command line: a CA, a
/// server certificate for 127.0.0.1 (SAN IP), a client certificate, and a second CA with a
/// client certificate of its own (one the server must refuse).
///
/// The client directories use the layout QEMU's `tls-creds-x509` (`endpoint=client`) and
/// libnbd's `tls-certificates=DIR` both read: `ca-cert.pem`, `client-cert.pem`,
/// `client-key.pem`. EC P-256 keys: quick to make, and GnuTLS, BoringSSL both take them.
public struct TLSCertificates {
    public let directory: String
    /// The server's files, for `--tls-cert`, `--tls-key`, `--tls-ca`.
    public var serverCert: String { "\(directory)/server-cert.pem" }
    public var serverKey: String { "\(directory)/server-key.pem" }
    public var caCert: String { "\(directory)/ca-cert.pem" }
    /// A client with a certificate the CA signed.
    public var client: String { "\(directory)/client" }
    /// A client that trusts the server but has no certificate of its own.
    public var noCertificate: String { "\(directory)/no-cert" }
    /// A client whose certificate another CA signed (it trusts both CAs).
    public var otherCA: String { "\(directory)/other-ca" }

    /// The `serve` arguments that turn TLS on with these files.
    public var serveArguments: [String] { ["--tls-cert", serverCert, "--tls-key", serverKey, "--tls-ca", caCert] }

    public init(in directory: String) throws {
        self.directory = directory
        let fm = FileManager.default
        for sub in [client, noCertificate, otherCA] {
            try fm.createDirectory(atPath: sub, withIntermediateDirectories: true)
        }
        try Self.makeCA(key: "\(directory)/ca-key.pem", cert: caCert, name: "Cairn test CA")
        try Self.makeCA(key: "\(directory)/other-ca-key.pem", cert: "\(directory)/other-ca-cert.pem", name: "Other CA")
        try Self.makeLeaf(
            in: directory, name: "server", subject: "127.0.0.1", ca: "ca",
            extensions: "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")
        try Self.makeLeaf(
            in: directory, name: "client", subject: "cairn-test-client", ca: "ca",
            extensions: "extendedKeyUsage=clientAuth\n")
        try Self.makeLeaf(
            in: directory, name: "rogue", subject: "cairn-rogue-client", ca: "other-ca",
            extensions: "extendedKeyUsage=clientAuth\n")
        for sub in [client, noCertificate] { try fm.copyItem(atPath: caCert, toPath: "\(sub)/ca-cert.pem") }
        // Both CAs: the client trusts the server, and QEMU's own check that its certificate
        // chains to a CA in the directory passes, so the refusal is the server's.
        let bothCAs =
            try String(contentsOfFile: caCert, encoding: .utf8)
            + String(contentsOfFile: "\(directory)/other-ca-cert.pem", encoding: .utf8)
        try bothCAs.write(toFile: "\(otherCA)/ca-cert.pem", atomically: true, encoding: .utf8)
        try fm.copyItem(atPath: "\(directory)/client-cert.pem", toPath: "\(client)/client-cert.pem")
        try fm.copyItem(atPath: "\(directory)/client-key.pem", toPath: "\(client)/client-key.pem")
        try fm.copyItem(atPath: "\(directory)/rogue-cert.pem", toPath: "\(otherCA)/client-cert.pem")
        try fm.copyItem(atPath: "\(directory)/rogue-key.pem", toPath: "\(otherCA)/client-key.pem")
    }

    /// QEMU's `--object` for a client with the files in `directory`.
    public static func qemuObject(_ directory: String) -> String {
        "tls-creds-x509,id=tls0,dir=\(directory),endpoint=client"
    }

    /// QEMU's `--image-opts` for export `name` at 127.0.0.1:`port` over TLS (`tls0`).
    public static func qemuImageOptions(port: Int, export name: String) -> String {
        "driver=nbd,host=127.0.0.1,port=\(port),export=\(name.replacingOccurrences(of: ",", with: ",,")),tls-creds=tls0"
    }

    static func makeCA(key: String, cert: String, name: String) throws {
        try QemuTools.check(
            "openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                "-out", cert, "-days", "2", "-subj", "/CN=\(name)", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ])
    }

    static func makeLeaf(in directory: String, name: String, subject: String, ca: String, extensions: String) throws {
        let ext = "\(directory)/\(name).ext"
        try ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n" + extensions)
            .write(toFile: ext, atomically: true, encoding: .utf8)
        try QemuTools.check(
            "openssl",
            [
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                "\(directory)/\(name)-key.pem", "-out", "\(directory)/\(name).csr", "-subj", "/CN=\(subject)",
            ])
        try QemuTools.check(
            "openssl",
            [
                "x509", "-req", "-in", "\(directory)/\(name).csr", "-CA", "\(directory)/\(ca)-cert.pem", "-CAkey",
                "\(directory)/\(ca)-key.pem", "-CAcreateserial", "-out", "\(directory)/\(name)-cert.pem", "-days", "2",
                "-extfile", ext,
            ])
    }
}
