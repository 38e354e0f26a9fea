import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Host keys (`cairn key add --new-host-key`): unattended runs open an encrypted repository with
/// a secret file on the host instead of a passphrase, and losing the host means removing its key.
@Suite struct HostKeyTests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }
    var hostKey: String { dir.file("host.key") }

    init() throws {
        try "the passphrase\n".write(toFile: dir.file("pass"), atomically: true, encoding: .utf8)
        let created = run(["init", "--repo", repo, "--encryption"], password: true)
        #expect(created.status == 0, "\(created.stderr)")
        let added = run(["key", "add", "--repo", repo, "--new-host-key", hostKey, "--hint", "host1"], password: true)
        #expect(added.status == 0, "\(added.stderr)")
    }

    /// `cairn ARGS` with the passphrase file (`password`) or the host key (`host`) in the
    /// environment, or neither.
    @discardableResult
    func run(_ arguments: [String], password: Bool = false, host: String? = nil) -> CairnProcess.Outcome {
        CairnProcess.run(
            arguments,
            environment: ["CAIRN_PASSWORD_FILE": password ? dir.file("pass") : "", "CAIRN_HOST_KEY": host ?? ""])
    }

    func keys() -> [[String: Any]] {
        let listed = run(["key", "list", "--repo", repo, "--json"])
        #expect(listed.status == 0, "\(listed.stderr)")
        return Fixture.jsonArray(listed.stdout)
    }

    var hostKeyID: String? { keys().first { $0["kind"] as? String == "host" }?["id"] as? String }
    var passphraseKeyID: String? { keys().first { $0["kind"] as? String == "passphrase" }?["id"] as? String }

    func mode(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? Int) ?? -1
    }

    @Test func aHostKeyBacksUpRestoresAndVerifiesWithNoPassphrase() throws {
        #expect(mode(hostKey) == 0o600)
        let listed = keys()
        #expect(listed.count == 2)
        let host = try #require(listed.first { $0["kind"] as? String == "host" })
        #expect(host["hint"] as? String == "host1")
        #expect((host["kdf"] as? [String: Any])?["name"] as? String == "hkdf-sha256")
        let text = run(["key", "list", "--repo", repo])
        #expect(text.stdout.contains("host key"), "\(text.stdout)")

        let image = dir.file("disk.img")
        var gen = TestImage(seed: 31)
        try gen.makeImage(at: image, size: 4 << 20)
        let backup = run(["backup", "--repo", repo, "--group", "vm", image], host: hostKey)
        #expect(backup.status == 0, "\(backup.stderr)")
        let out = dir.file("out.img")
        let restore = run(["restore", "--repo", repo, "vm@latest", "--to", out], host: hostKey)
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(FileManager.default.contentsEqual(atPath: image, andPath: out))
        let verify = run(["verify", "--repo", repo], host: hostKey)
        #expect(verify.status == 0, "\(verify.stderr)")
        // --host-key on the command line does the same as the environment.
        let flag = run(["list", "--repo", repo, "--host-key", hostKey])
        #expect(flag.status == 0 && flag.stdout.contains("vm"), "\(flag.stderr)")
        // ... and the same repository still opens with the passphrase.
        let withPassphrase = run(["list", "--repo", repo], password: true)
        #expect(withPassphrase.status == 0 && withPassphrase.stdout.contains("vm"), "\(withPassphrase.stderr)")
    }

    @Test func aHostKeyOthersCanReadIsRefusedAndNothingTouched() throws {
        chmod(hostKey, 0o644)
        let before = TestImage.snapshotTree(repo)
        let outcome = run(["list", "--repo", repo], host: hostKey)
        #expect(outcome.status == 64, "\(outcome.stderr)")
        #expect(outcome.stderr.contains("readable by others") && outcome.stderr.contains("chmod 600"))
        #expect(outcome.stderr.split(separator: "\n").count == 1, "\(outcome.stderr)")
        #expect(TestImage.snapshotTree(repo) == before)
    }

    @Test func aRemovedHostKeyIsRevokedAndTheLastPassphraseKeyStays() throws {
        let hostID = try #require(hostKeyID)
        let passID = try #require(passphraseKeyID)
        // The passphrase key cannot go while only a host key would be left: archives and people need one.
        let last = run(["key", "remove", "--repo", repo, passID], host: hostKey)
        #expect(last.status != 0 && last.stderr.contains("last usable passphrase key"), "\(last.stderr)")
        let removed = run(["key", "remove", "--repo", repo, hostID], password: true)
        #expect(removed.status == 0, "\(removed.stderr)")
        let after = run(["list", "--repo", repo], host: hostKey)
        #expect(after.status == 14, "\(after.stderr)")
        #expect(after.stderr.contains("revoked"), "\(after.stderr)")
        // Host keys are not exported: they mean nothing away from their host.
        let again = run(["key", "add", "--repo", repo, "--new-host-key", dir.file("host2.key")], password: true)
        #expect(again.status == 0, "\(again.stderr)")
        let export = run(
            ["key", "export", "--repo", repo, try #require(hostKeyID), "-o", dir.file("x.key")], password: true)
        #expect(export.status != 0 && export.stderr.contains("host keys are not exported"), "\(export.stderr)")
    }

    @Test func aHostKeyOfAnotherRepositoryOrAnExistingFileIsRefused() throws {
        let other = dir.file("other")
        #expect(run(["init", "--repo", other, "--encryption"], password: true).status == 0)
        let outcome = run(["list", "--repo", other], host: hostKey)
        #expect(outcome.status == 14 && outcome.stderr.contains("is for repository"), "\(outcome.stderr)")
        // A second host key is never written over the first.
        let before = try Data(contentsOf: URL(fileURLWithPath: hostKey))
        let clash = run(["key", "add", "--repo", repo, "--new-host-key", hostKey], password: true)
        #expect(clash.status != 0, "\(clash.stdout)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: hostKey)) == before)
        #expect(keys().count == 2, "a refused host key leaves no key file")
    }

    /// An archive's label carries the passphrase keys only: the tape restores with the
    /// passphrase, and the host key's id is nowhere in it.
    @Test func anArchiveCarriesNoHostKey() throws {
        let image = dir.file("disk.img")
        var gen = TestImage(seed: 32)
        try gen.makeImage(at: image, size: 1 << 20)
        #expect(run(["backup", "--repo", repo, "--group", "vm", image], host: hostKey).status == 0)
        let base = dir.file("tape")
        let written = run(["archive", "write", "--repo", repo, "vm@latest", "--to", base], host: hostKey)
        #expect(written.status == 0, "\(written.stderr)")
        let volumes = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("tape") }
            .sorted().map { dir.file($0) }
        #expect(!volumes.isEmpty)
        let hostID = try #require(hostKeyID)
        let passID = try #require(passphraseKeyID)
        let bytes = volumes.map { (try? Data(contentsOf: URL(fileURLWithPath: $0))) ?? Data() }.reduce(Data(), +)
        #expect(bytes.range(of: Data(hostID.utf8)) == nil)
        #expect(bytes.range(of: Data(passID.utf8)) != nil)
        let out = dir.file("out.img")
        let restored = run(["archive", "restore"] + volumes + ["vm@latest", "--to", out], password: true)
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(FileManager.default.contentsEqual(atPath: image, andPath: out))
    }
}
