import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Keys of an encrypted repository (issue 14, step 2): `init --encryption`, `cairn key`
/// add/list/remove/export/import, the passphrase sources, and refusals that touch nothing.
@Suite struct EncryptionKeyTests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }
    var keys: String { "\(repo)/keys" }

    init() throws {
        try write("first passphrase\n", to: "pass1")
        try write("second passphrase", to: "pass2")
        try write("not it\n", to: "wrong")
        let created = run(["init", "--repo", repo, "--encryption", "--json"], password: "pass1")
        #expect(created.status == 0, "\(created.stderr)")
        #expect(Fixture.json(created.stdout)["encrypted"] as? Bool == true)
    }

    func write(_ text: String, to name: String) throws {
        try text.write(toFile: dir.file(name), atomically: true, encoding: .utf8)
    }

    /// `cairn ARGS` with `$CAIRN_PASSWORD_FILE` set to the file `password` (nil: unset).
    @discardableResult
    func run(_ arguments: [String], password: String? = "pass1") -> CairnProcess.Outcome {
        CairnProcess.run(arguments, environment: ["CAIRN_PASSWORD_FILE": password.map { dir.file($0) } ?? ""])
    }

    func keyIDs() -> [String] {
        let listed = run(["key", "list", "--repo", repo, "--json"], password: nil)
        #expect(listed.status == 0, "\(listed.stderr)")
        return Fixture.jsonArray(listed.stdout).compactMap { $0["id"] as? String }
    }

    func mode(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? Int) ?? -1
    }

    @Test func initWritesOneKeyFile0600AndDeclaresTheFeature() throws {
        let ids = keyIDs()
        #expect(ids.count == 1)
        #expect(mode("\(keys)/\(ids[0])") == 0o600)
        #expect(mode(keys) == 0o700)
        let config = try String(contentsOfFile: "\(repo)/config", encoding: .utf8)
        #expect(config.contains("\"encryption\"\n  ]") || config.contains("\"encryption\"\n"), "\(config)")
        #expect(config.contains("\"chunkIDs\" : \"hmac-sha256\""), "\(config)")
        let keyText = try String(contentsOfFile: "\(keys)/\(ids[0])", encoding: .utf8)
        #expect(!keyText.contains("first passphrase"))
        #expect(
            Fixture.json(keyText)["fingerprint"] as? String
                == Fixture.json(config)["encryption"].flatMap {
                    ($0 as? [String: Any])?["fingerprint"] as? String
                })
    }

    /// A data command needs the passphrase: without one at hand (no file, no terminal) it says
    /// so in one line and touches nothing; it never reads the repository as plain.
    @Test func dataCommandsWithoutAPassphraseTouchNothing() throws {
        let image = dir.file("disk.img")
        var gen = TestImage(seed: 14)
        try gen.makeImage(at: image, size: 1 << 20)
        let before = TestImage.snapshotTree(repo)
        for arguments in [["backup", "--group", "vm", image], ["list"], ["verify"], ["gc"]] {
            let outcome = run([arguments[0], "--repo", repo] + arguments.dropFirst(), password: nil)
            #expect(
                outcome.status == 64 && outcome.stderr.contains("no passphrase: set CAIRN_PASSWORD_FILE"),
                "\(arguments): \(outcome.stderr)")
        }
        #expect(TestImage.snapshotTree(repo) == before)
    }

    @Test func aWrongPassphraseIsOneLineWithItsOwnCodeAndTouchesNothing() throws {
        let before = TestImage.snapshotTree(repo)
        for arguments in [["key", "add", "--new-password-file", dir.file("pass2")], ["key", "remove", keyIDs()[0]]] {
            let outcome = run(arguments + ["--repo", repo], password: "wrong")
            #expect(outcome.status == 14, "\(arguments): \(outcome.stderr)")
            let message = outcome.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(
                message.hasPrefix("cairn: the passphrase does not open the key of repository")
                    && !message.contains("\n"), "\(message)")
            #expect(!message.contains("not it"))
        }
        #expect(TestImage.snapshotTree(repo) == before)
    }

    @Test func aPasswordCommandIsRunAndItsFailureNamed() throws {
        let good = run(
            [
                "key", "add", "--repo", repo, "--password-command", "printf 'first passphrase'",
                "--new-password-command",
                "echo second passphrase",
            ], password: nil)
        #expect(good.status == 0, "\(good.stderr)")
        #expect(keyIDs().count == 2)
        let failing = run(["key", "add", "--repo", repo, "--password-command", "exit 3"], password: nil)
        #expect(failing.status == 64 && failing.stderr.contains("exited with status 3"), "\(failing.stderr)")
    }

    @Test func addListRemoveNeverTheLast() throws {
        let first = keyIDs()[0]
        let added = run(["key", "add", "--repo", repo, "--new-password-file", dir.file("pass2"), "--hint", "offsite"])
        #expect(added.status == 0, "\(added.stderr)")
        let ids = keyIDs()
        #expect(ids.count == 2)
        let second = try #require(ids.first { $0 != first })
        // The passphrase given must open a key that stays.
        let own = run(["key", "remove", "--repo", repo, first])
        #expect(own.status == 64 && own.stderr.contains("itself"), "\(own.stderr)")
        let removed = run(["key", "remove", "--repo", repo, first], password: "pass2")
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(keyIDs() == [second])
        // The removed passphrase no longer opens the repository; the last key stays.
        let old = run(["key", "add", "--repo", repo, "--new-password-file", dir.file("pass1")], password: "pass1")
        #expect(old.status == 14, "\(old.stderr)")
        let last = run(["key", "remove", "--repo", repo, second], password: "pass2")
        #expect(last.status != 0 && keyIDs() == [second], "\(last.stderr)")
    }

    @Test func aTruncatedOrSwappedKeyFileIsNamed() throws {
        let id = keyIDs()[0]
        let path = "\(keys)/\(id)"
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        // A key file from another encrypted repository, under this one's name.
        let other = dir.file("other")
        #expect(run(["init", "--repo", other, "--encryption"]).status == 0)
        let otherID = try #require(FileManager.default.contentsOfDirectory(atPath: "\(other)/keys").first)
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: "\(other)/keys/\(otherID)", toPath: path)
        let swapped = run(["key", "add", "--repo", repo, "--new-password-file", dir.file("pass2")])
        #expect(swapped.status == 7 && swapped.stderr.contains("belongs to repository"), "\(swapped.stderr)")

        try original.prefix(original.count / 2).write(to: URL(fileURLWithPath: path))
        let truncated = run(["key", "add", "--repo", repo, "--new-password-file", dir.file("pass2")])
        #expect(truncated.status == 7 && truncated.stderr.contains("keys/\(id)"), "\(truncated.stderr)")
        let listed = run(["key", "list", "--repo", repo, "--json"], password: nil)
        #expect(Fixture.jsonArray(listed.stdout).first?["problem"] != nil, "\(listed.stdout)")

        try original.write(to: URL(fileURLWithPath: path))
        #expect(run(["key", "add", "--repo", repo, "--new-password-file", dir.file("pass2")]).status == 0)
    }

    @Test func anExportedAndAPaperKeyImportBack() throws {
        let id = keyIDs()[0]
        let exported = dir.file("exported.key")
        let export = run(["key", "export", "--repo", repo, "--output", exported], password: nil)
        #expect(export.status == 0, "\(export.stderr)")
        #expect(mode(exported) == 0o600)
        let paper = run(["key", "export", "--repo", repo, "--paper"], password: nil)
        #expect(paper.status == 0 && paper.stdout.contains("01  "), "\(paper.stderr)")
        #expect(!paper.stdout.contains("first passphrase"))

        // The key file is lost (after a second key was added, so that removal is allowed).
        #expect(run(["key", "add", "--repo", repo, "--new-password-file", dir.file("pass2")]).status == 0)
        #expect(run(["key", "remove", "--repo", repo, id], password: "pass2").status == 0)
        // Typed back in from paper: only the numbered lines matter.
        let typed = paper.stdout.components(separatedBy: "\n").filter { $0.first?.isNumber == true }
        try write("my paper key\n" + typed.joined(separator: "\n") + "\n", to: "typed.txt")
        let wrongPass = run(["key", "import", "--repo", repo, dir.file("typed.txt")], password: "pass2")
        #expect(wrongPass.status == 14, "\(wrongPass.stderr)")
        let imported = run(["key", "import", "--repo", repo, dir.file("typed.txt")])
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(keyIDs().contains(id))
        let again = run(["key", "import", "--repo", repo, exported])
        #expect(again.status == 8, "\(again.stderr)")
    }

    @Test func anUnencryptedRepositoryHasNoKeys() throws {
        let plain = dir.file("plain")
        #expect(CairnProcess.run(["init", "--repo", plain]).status == 0)
        let listed = run(["key", "list", "--repo", plain], password: nil)
        #expect(listed.status == 64 && listed.stderr.contains("not encrypted"), "\(listed.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(plain)/keys"))
    }
}
