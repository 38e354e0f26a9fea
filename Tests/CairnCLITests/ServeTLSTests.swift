import CairnCore
import CairnTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `cairn serve --listen` over TCP: TLS with client certificates (NBD_OPT_STARTTLS), judged by
/// QEMU (`tls-creds-x509`) and libnbd (`nbds://`), the refusals, and plain TCP with
/// `--insecure`. Certificates are made per test with `openssl`; every server binds
/// 127.0.0.1:0 and reports its port in the `--json` status, so runs never collide.
@Suite struct ServeTLSTests {
    let dir = TemporaryDirectory("cairn-serve-tls")
    var repo: String { dir.file("repo") }
    var image: String { dir.file("disk.raw") }

    /// A 4 MiB raw disk with patterns and a zero run, backed up as `vm1`; returns the export name.
    func makeDisk() throws -> String {
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "64K"]).status == 0)
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "raw", image, "4M"])
        try QemuTools.check(
            "qemu-io", ["-f", "raw", "-c", "write -P 0x5a 0 512k", "-c", "write -P 0xa5 3M 100000", image])
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "vm1", "--json", image])
        #expect(backup.status == 0, "\(backup.stderr)")
        return "\(Fixture.json(backup.stdout)["id"] as? String ?? "")/disk.raw"
    }

    func startTLSServer(_ certificates: TLSCertificates, extra: [String] = []) throws -> ServeProcess {
        try ServeProcess(
            repo: repo, arguments: certificates.serveArguments + extra, directory: dir.path, listen: "127.0.0.1:0")
    }

    /// `qemu-img ARGS` with the TLS object of client directory `credentials` and `--image-opts`.
    func qemuImg(_ command: String, _ credentials: String, _ arguments: [String]) throws -> QemuTools.Output {
        try QemuTools.run(
            "qemu-img", [command, "--object", TLSCertificates.qemuObject(credentials), "--image-opts"] + arguments)
    }

    @Test func clientsWithCertificatesReadOverTLS() throws {
        let name = try makeDisk()
        let certificates = try TLSCertificates(in: dir.file("tls"))
        let server = try startTLSServer(certificates)
        let port = server.port
        #expect(port > 0 && server.status["tls"] as? Bool == true, "\(server.status)")
        #expect(server.status["listen"] as? String == "127.0.0.1:\(port)")
        #expect(server.uri == "nbds://127.0.0.1:\(port)/\(name)")
        let options = TLSCertificates.qemuImageOptions(port: port, export: name)

        // QEMU: info, convert, and compare against the original disk.
        let info = try qemuImg("info", certificates.client, [options])
        #expect(info.status == 0 && info.standardOutput.contains("4 MiB"), "\(info)")
        let copy = dir.file("copy.raw")
        let convert = try qemuImg("convert", certificates.client, [options, "-O", "raw", copy])
        #expect(convert.status == 0, "\(convert.standardError)")
        #expect(try TestImage.sha256(of: copy) == TestImage.sha256(of: image))
        let compare = try qemuImg("compare", certificates.client, [options, "driver=file,filename=\(image)"])
        #expect(compare.status == 0 && compare.standardOutput.contains("identical"), "\(compare)")

        // libnbd: nbdinfo (size, read-only) and --map (the zero run is hole and zero), nbdcopy.
        let uri = "\(server.uri)?tls-certificates=\(certificates.client)"
        let shown = Subprocess.run("nbdinfo", [uri], environment: ["LIBNBD_DEBUG": "1"])
        #expect(shown.status == 0, "\(shown.stderr.suffix(2000))")
        #expect(shown.stdout.contains("export-size: 4194304") && shown.stdout.contains("is_read_only: true"))
        #expect(shown.stderr.contains("TLS"), "libnbd's debug log shows the TLS handshake")
        let map = Subprocess.run("nbdinfo", ["--map", uri])
        #expect(map.status == 0 && map.stdout.contains("hole,zero"), "\(map)")
        let copied = dir.file("nbdcopy.raw")
        let nbdcopy = Subprocess.run("nbdcopy", ["--connections=2", uri, copied])
        #expect(nbdcopy.status == 0, "\(nbdcopy.stderr)")
        #expect(try TestImage.sha256(of: copied) == TestImage.sha256(of: image))

        #expect(server.stop() == 0)
        #expect(
            server.standardError.contains("from 127.0.0.1:") && server.standardError.contains(", TLS, export \(name)"))
    }

    @Test func clientsWithoutAValidCertificateAreRefused() throws {
        let name = try makeDisk()
        let certificates = try TLSCertificates(in: dir.file("tls"))
        let server = try startTLSServer(certificates)
        let port = server.port
        let options = TLSCertificates.qemuImageOptions(port: port, export: name)

        // No client certificate, and one another CA signed: QEMU and libnbd are refused.
        for credentials in [certificates.noCertificate, certificates.otherCA] {
            let info = try qemuImg("info", credentials, [options])
            #expect(info.status != 0, "qemu-img with \(credentials) must be refused: \(info)")
            let nbdinfo = Subprocess.run("nbdinfo", ["\(server.uri)?tls-certificates=\(credentials)"])
            #expect(nbdinfo.status != 0, "nbdinfo with \(credentials) must be refused")
        }

        // A plain-text client: libnbd is refused with NBD_REP_ERR_TLS_REQD and shows its message.
        let plain = Subprocess.run("nbdinfo", ["nbd://127.0.0.1:\(port)/\(name)"], environment: ["LIBNBD_DEBUG": "1"])
        #expect(plain.status != 0, "nbdinfo without TLS must be refused")
        #expect(
            plain.stderr.contains("server error message: this server requires TLS"), "\(plain.stderr.suffix(3000))")

        // Byte for byte: before STARTTLS only STARTTLS and ABORT are taken, the rest is TLS_REQD.
        let raw = try RawNBDClient(tcpPort: port)
        #expect(raw.greet())
        let exportName = Array(name.utf8)
        for (option, data) in [
            (UInt32(7), RawNBDClient.be(UInt32(exportName.count)) + exportName + RawNBDClient.be(UInt16(0))),
            (6, RawNBDClient.be(UInt32(exportName.count)) + exportName + RawNBDClient.be(UInt16(0))), (3, []),
            (8, []), (0x4242, [1, 2, 3]),
        ] {
            #expect(raw.sendOption(option, data))
            let reply = raw.receiveOptionReply()
            #expect(reply?.option == option && reply?.type == 0x8000_0005, "option \(option) before TLS")
        }
        #expect(raw.sendOption(5, [1]))
        #expect(raw.receiveOptionReply()?.type == 0x8000_0003, "STARTTLS with data is invalid")
        #expect(raw.sendOption(2, []))
        #expect(raw.receiveOptionReply()?.type == 1, "ABORT is acknowledged before TLS")
        #expect(raw.isClosedByServer())
        // EXPORT_NAME cannot be answered with an error: the server hangs up.
        let legacy = try RawNBDClient(tcpPort: port)
        #expect(legacy.greet() && legacy.sendOption(1, exportName))
        #expect(legacy.isClosedByServer())

        // The server keeps serving clients that do hold a good certificate.
        let info = try qemuImg("info", certificates.client, [options])
        #expect(info.status == 0, "\(info.standardError)")
        #expect(server.stop() == 0)
        #expect(server.standardError.contains("EXPORT_NAME before STARTTLS"))
    }

    @Test func aStalledTLSHandshakeTimesOutWithoutStallingOthers() throws {
        let name = try makeDisk()
        let certificates = try TLSCertificates(in: dir.file("tls"))
        let server = try startTLSServer(certificates, extra: ["--handshake-timeout", "3"])
        let port = server.port
        // One client stops after STARTTLS's ACK, another halfway through its TLS hello.
        let silent = try RawNBDClient(tcpPort: port, timeout: 20)
        #expect(silent.greet() && silent.sendOption(5, []))
        #expect(silent.receiveOptionReply()?.type == 1, "STARTTLS is acknowledged")
        let partial = try RawNBDClient(tcpPort: port, timeout: 20)
        #expect(partial.greet() && partial.sendOption(5, []))
        #expect(partial.receiveOptionReply()?.type == 1)
        #expect(partial.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC]), "a ClientHello cut short")
        let started = Date()

        // Others are served meanwhile, over TLS.
        let copy = dir.file("copy.raw")
        let options = TLSCertificates.qemuImageOptions(port: port, export: name)
        let convert = try qemuImg("convert", certificates.client, [options, "-O", "raw", copy])
        #expect(convert.status == 0, "\(convert.standardError)")
        #expect(try TestImage.sha256(of: copy) == TestImage.sha256(of: image))

        // Both stalled clients are closed once the handshake time is up.
        #expect(silent.isClosedByServer() && partial.isClosedByServer())
        let waited = Date().timeIntervalSince(started)
        #expect(waited > 1 && waited < 15, "closed after \(waited) s")
        #expect(server.stop() == 0)
        #expect(server.standardError.components(separatedBy: "no export chosen within 3 s").count - 1 == 2)
    }

    @Test func insecureServesPlainTCP() throws {
        let name = try makeDisk()
        let server = try ServeProcess(repo: repo, arguments: ["--insecure"], directory: dir.path, listen: "127.0.0.1:0")
        let port = server.port
        #expect(port > 0 && server.status["tls"] as? Bool == false)
        #expect(server.uri == "nbd://127.0.0.1:\(port)/\(name)")
        let copy = dir.file("copy.raw")
        try QemuTools.check("qemu-img", ["convert", "-f", "raw", "-O", "raw", server.uri, copy])
        #expect(try QemuTools.run("qemu-img", ["compare", "-f", "raw", "-F", "raw", image, copy]).status == 0)
        let info = Subprocess.run("nbdinfo", [server.uri])
        #expect(info.status == 0 && info.stdout.contains("export-size: 4194304"), "\(info.stderr)")
        // STARTTLS is not offered by a plain server.
        let raw = try RawNBDClient(tcpPort: port)
        #expect(raw.greet() && raw.sendOption(5, []))
        #expect(raw.receiveOptionReply()?.type == 0x8000_0001)
        #expect(server.stop() == 0)
    }

    @Test func listenNeedsTLSOrInsecure() throws {
        _ = try makeDisk()
        let certificates = try TLSCertificates(in: dir.file("tls"))
        let base = ["serve", "--repo", repo]
        let bare = CairnProcess.run(base + ["--listen", "127.0.0.1:0"])
        #expect(bare.status == 64 && bare.stderr.contains("--tls-cert"), "\(bare.stderr)")
        let partial = CairnProcess.run(base + ["--listen", "127.0.0.1:0", "--tls-cert", certificates.serverCert])
        #expect(partial.status == 64 && partial.stderr.contains("all three"), "\(partial.stderr)")
        let both = CairnProcess.run(base + ["--listen", "127.0.0.1:0", "--insecure"] + certificates.serveArguments)
        #expect(both.status == 64, "\(both.stderr)")
        let onSocket = CairnProcess.run(base + ["--socket", dir.file("s.sock")] + certificates.serveArguments)
        #expect(onSocket.status == 64, "\(onSocket.stderr)")
        // A key that is not PEM, and a key that belongs to another certificate.
        let notPEM = CairnProcess.run(
            base + [
                "--listen", "127.0.0.1:0", "--tls-cert", certificates.serverCert, "--tls-key", image, "--tls-ca",
                certificates.caCert,
            ])
        #expect(notPEM.status == 64 && notPEM.stderr.contains("--tls-key"), "\(notPEM.stderr)")
        let mismatched = CairnProcess.run(
            base + [
                "--listen", "127.0.0.1:0", "--tls-cert", certificates.serverCert, "--tls-key",
                "\(certificates.directory)/client-key.pem", "--tls-ca", certificates.caCert,
            ])
        #expect(mismatched.status == 64, "\(mismatched.stderr)")
        let missing = CairnProcess.run(
            base + [
                "--listen", "127.0.0.1:0", "--tls-cert", dir.file("nope.pem"), "--tls-key", certificates.serverKey,
                "--tls-ca", certificates.caCert,
            ])
        #expect(missing.status == 4 && missing.stderr.contains("nope.pem"), "\(missing.stderr)")
    }
}
