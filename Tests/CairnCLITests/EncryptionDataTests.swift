import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// The encrypted data path (issue 14, step 3): keyed chunk ids, sealed records and sealed
/// manifests, exercised through the `cairn` binary against `init --encryption` repositories.
@Suite struct EncryptionDataTests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }
    static let group = "marker-vm-group"
    static let diskName = "marker-disk-name.img"
    var image: String { dir.file(Self.diskName) }
    /// 1 MiB of seeded random bytes: incompressible, so an unencrypted pack holds them verbatim.
    let marker: [UInt8]

    init() throws {
        try "data passphrase\n".write(toFile: dir.file("pass"), atomically: true, encoding: .utf8)
        try "not it\n".write(toFile: dir.file("wrong"), atomically: true, encoding: .utf8)
        var gen = TestImage(seed: 1414)
        marker = try gen.makeMarkedImage(at: dir.file(Self.diskName))
        let created = run(["init", "--repo", repo, "--encryption"])
        #expect(created.status == 0, "\(created.stderr)")
    }

    /// `cairn ARGS` with `$CAIRN_PASSWORD_FILE` set to the file `password`, as `host` (each host
    /// its own state directory).
    @discardableResult
    func run(_ arguments: [String], password: String = "pass", host: String = "a") -> CairnProcess.Outcome {
        CairnProcess.run(
            arguments,
            environment: ["CAIRN_PASSWORD_FILE": dir.file(password), "CAIRN_STATE_DIR": dir.file("state-\(host)")])
    }

    func backup(_ repository: String? = nil) {
        let outcome = run(["backup", "--repo", repository ?? repo, "--group", Self.group, image])
        #expect(outcome.status == 0, "\(outcome.stderr)")
    }

    /// Every file under `root` (locks included) that contains `needle`, in its bytes or its name.
    static func files(under root: String, containing needle: [UInt8]) -> [String] {
        let target = Data(needle)
        var found: [String] = []
        guard let walk = FileManager.default.enumerator(atPath: root) else { return [] }
        while let name = walk.nextObject() as? String {
            var isDirectory: ObjCBool = false
            let path = "\(root)/\(name)"
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
                let bytes = FileManager.default.contents(atPath: path)
            else { continue }
            if bytes.range(of: target) != nil || Data(name.utf8).range(of: target) != nil { found.append(name) }
        }
        return found
    }

    /// Pieces of the marker and the names a backup knows, each searched for in every file.
    var needles: [(String, [UInt8])] {
        [
            ("marker start", Array(marker[0..<64])), ("marker middle", Array(marker[(512 << 10)..<((512 << 10) + 64)])),
            ("marker end", Array(marker[(marker.count - 64)...])), ("group name", Array(Self.group.utf8)),
            ("disk name", Array(Self.diskName.utf8)),
        ]
    }

    /// Paths under `root` whose name contains `text`.
    static func paths(under root: String, naming text: String) -> [String] {
        (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []).filter { $0.contains(text) }
    }

    /// The time of the group's newest restore point, as `list --json` prints its id.
    func newestTime(_ repository: String) throws -> String {
        let listed = run(["list", "--repo", repository, "--group", Self.group, "--json"])
        let id = try #require(listed.stdout.firstMatch(of: /"id" *: *"([^"@]+)@([^"]+)"/), "\(listed.stdout)")
        return String(id.output.2)
    }

    @Test func theMarkerAndTheNamesAppearInNoFileOfAnEncryptedRepository() throws {
        backup()
        #expect(run(["verify", "--repo", repo]).status == 0)
        for (what, needle) in needles {
            #expect(Self.files(under: repo, containing: needle).isEmpty, "\(what) found in the encrypted repository")
        }
        // Nor do the restore point's time or the group name in any file's or directory's name.
        let time = try newestTime(repo)
        #expect(Self.paths(under: repo, naming: time).isEmpty && Self.paths(under: repo, naming: Self.group).isEmpty)
        // The same backup into an unencrypted repository holds them: the search can fail.
        let plain = dir.file("plain")
        #expect(run(["init", "--repo", plain]).status == 0)
        backup(plain)
        for (what, needle) in needles {
            #expect(!Self.files(under: plain, containing: needle).isEmpty, "\(what) not found in the plain repository")
        }
        #expect(!Self.paths(under: plain, naming: try newestTime(plain)).isEmpty)
    }

    @Test func backupIncrementalRestoreRawAndQCOW2AndVerify() throws {
        backup()
        var gen = TestImage(seed: 99)
        try gen.scatterWrites(at: image, count: 5)
        sleep(1)
        backup()
        let listed = run(["list", "--repo", repo, "--json"])
        #expect(listed.status == 0 && listed.stdout.contains(Self.group), "\(listed.stderr)")
        let verified = run(["verify", "--repo", repo])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        for format in ["raw", "qcow2"] {
            let out = dir.file("out.\(format)")
            let restored = run(["restore", "--repo", repo, "\(Self.group)@latest", "--to", out, "--format", format])
            #expect(restored.status == 0, "\(format): \(restored.stderr)")
            let compare = try QemuTools.run("qemu-img", ["compare", "-f", "raw", "-F", format, image, out])
            #expect(compare.status == 0, "\(format): \(compare.standardOutput)\(compare.standardError)")
        }
        // The incremental stored only what changed: a second unchanged backup adds no pack.
        let packs = Fixture.files(under: repo, suffix: ".pack").count
        sleep(1)
        backup()
        #expect(Fixture.files(under: repo, suffix: ".pack").count == packs)
        // prune, gc and rebuild-index work on it too, and it still restores and verifies.
        let pruned = run(["prune", "--repo", repo, "--keep-last", "1"])
        #expect(pruned.status == 0, "\(pruned.stderr)")
        let collected = run(["gc", "--repo", repo])
        #expect(collected.status == 0, "\(collected.stderr)")
        let rebuilt = run(["rebuild-index", "--repo", repo])
        #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
        #expect(run(["verify", "--repo", repo]).status == 0)
        let again = dir.file("again.raw")
        #expect(run(["restore", "--repo", repo, "\(Self.group)@latest", "--to", again]).status == 0)
        #expect(try TestImage.sha256(of: again) == TestImage.sha256(of: image))
    }

    @Test func aFlippedByteInAPackIsNamedByVerifyAndStopsRestore() throws {
        backup()
        let pack = try #require(Fixture.files(under: repo, suffix: ".pack").first)
        // Inside the marker's record: far from the pack's header and table.
        try Fixture.flip(pack, at: Fixture.fileSize(pack) / 2)
        let verified = run(["verify", "--repo", repo])
        #expect(verified.status == 7, "\(verified.stdout)\(verified.stderr)")
        #expect((verified.stdout + verified.stderr).contains("\(Self.group)@"), "\(verified.stdout)\(verified.stderr)")
        let restored = run(["restore", "--repo", repo, "\(Self.group)@latest", "--to", dir.file("out.raw")])
        #expect(restored.status == 7, "\(restored.stderr)")
    }

    /// `--allow-damaged` on a sealed record that fails: zeros exactly where the damaged
    /// record's blocks go (a frame is sealed whole, so all of its members), the rest bit-for-bit.
    @Test func allowDamagedZerosExactlyTheDamagedRecordsBlocks() throws {
        backup()
        let pack = try #require(Fixture.files(under: repo, suffix: ".pack").first)
        try Fixture.flip(pack, at: Fixture.fileSize(pack) / 2)
        let out = dir.file("out.raw")
        let allowed = run(["restore", "--repo", repo, "\(Self.group)@latest", "--to", out, "--allow-damaged", "--json"])
        #expect(allowed.status == 12, "\(allowed.stderr)")
        let ranges = Fixture.json(allowed.stdout)["damaged"] as? [[String: Any]] ?? []
        let zeroed = ranges.map { (UInt64($0["offset"] as! Int), UInt64($0["length"] as! Int)) }
        #expect(!zeroed.isEmpty && zeroed.reduce(0) { $0 + $1.1 } <= 2 << 20, "one record: at most one frame window")
        let restored = try File.open(out, .readOnly)
        let original = try File.open(image, .readOnly)
        let block: UInt64 = 64 << 10
        for offset in stride(from: UInt64(0), to: 8 << 20, by: Int(block)) {
            let got = try restored.readBytes(count: Int(block), at: offset)
            if zeroed.contains(where: { offset >= $0.0 && offset < $0.0 + $0.1 }) {
                #expect(got.allSatisfy { $0 == 0 }, "zeros at \(offset)")
            } else {
                #expect(got == (try original.readBytes(count: Int(block), at: offset)), "bit-for-bit at \(offset)")
            }
        }
    }

    @Test func aManifestSwappedBetweenTwoRestorePointsIsDetected() throws {
        backup()
        sleep(1)
        backup()
        let manifests = Fixture.files(under: repo, suffix: ".manifest").sorted()
        #expect(manifests.count == 2)
        let first = try Data(contentsOf: URL(fileURLWithPath: manifests[0]))
        try Data(contentsOf: URL(fileURLWithPath: manifests[1])).write(to: URL(fileURLWithPath: manifests[0]))
        try first.write(to: URL(fileURLWithPath: manifests[1]))
        let verified = run(["verify", "--repo", repo])
        #expect(verified.status == 7, "\(verified.stdout)\(verified.stderr)")
        let restored = run(["restore", "--repo", repo, "\(Self.group)@latest", "--to", dir.file("out.raw")])
        #expect(restored.status == 7 && restored.stderr.contains("fails authentication"), "\(restored.stderr)")
    }

    @Test func aWrongPassphraseExits14AndTouchesNothing() throws {
        backup()
        let before = TestImage.snapshotTree(repo)
        for arguments in [
            ["backup", "--group", Self.group, image], ["list"], ["verify"], ["gc"], ["prune", "--keep-last", "1"],
            ["rebuild-index"], ["restore", "\(Self.group)@latest", "--to", dir.file("out.raw")],
        ] {
            let outcome = run([arguments[0], "--repo", repo] + arguments.dropFirst(), password: "wrong")
            #expect(outcome.status == 14, "\(arguments): \(outcome.stderr)")
            #expect(!outcome.stderr.trimmingCharacters(in: .whitespacesAndNewlines).contains("\n"), "\(outcome.stderr)")
        }
        #expect(TestImage.snapshotTree(repo) == before)
        #expect(!FileManager.default.fileExists(atPath: dir.file("out.raw")))
        // --password-command comes before $CAIRN_PASSWORD_FILE, for data commands too.
        let listed = run(
            ["list", "--repo", repo, "--password-command", "cat '\(dir.file("pass"))'"], password: "wrong")
        #expect(listed.status == 0 && listed.stdout.contains(Self.group), "\(listed.stderr)")
    }

    /// The repository put back to an older copy of itself: every file still opens, but this host
    /// saw a newer restore point, which no prune or forget removed.
    @Test func aRolledBackRepositoryIsDetected() throws {
        backup()
        let older = dir.file("older")
        #expect(Subprocess.run("cp", ["-a", repo, older]).status == 0)
        sleep(1)
        backup()
        #expect(run(["verify", "--repo", repo]).status == 0)
        #expect(Subprocess.run("rm", ["-rf", repo]).status == 0)
        #expect(Subprocess.run("cp", ["-a", older, repo]).status == 0)
        let verified = run(["verify", "--repo", repo])
        #expect(
            verified.status == 7 && (verified.stdout + verified.stderr).contains("rolled back"),
            "\(verified.stdout)\(verified.stderr)")
        let listed = run(["list", "--repo", repo])
        #expect(listed.status == 0 && listed.stderr.contains("rolled back"), "\(listed.stderr)")
        // A host that never saw the newer restore point finds nothing wrong.
        #expect(run(["verify", "--repo", repo], host: "b").status == 0)
    }

    /// A forget on another host leaves a sealed tombstone, so this host does not take it for a
    /// roll-back; a manifest deleted by hand leaves none, and is.
    @Test func aForgetOnAnotherHostIsNoRollBackButADeletionByHandIs() throws {
        backup()
        sleep(1)
        backup()
        #expect(run(["verify", "--repo", repo]).status == 0)
        let forgotten = run(["forget", "--repo", repo, "\(Self.group)@\(try newestTime(repo))"], host: "b")
        #expect(forgotten.status == 0, "\(forgotten.stderr)")
        let verified = run(["verify", "--repo", repo])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        let before = Set(Fixture.files(under: repo, suffix: ".manifest"))
        sleep(1)
        backup()
        let newest = try #require(Set(Fixture.files(under: repo, suffix: ".manifest")).subtracting(before).first)
        try FileManager.default.removeItem(atPath: newest)
        let again = run(["verify", "--repo", repo])
        #expect(
            again.status == 7 && (again.stdout + again.stderr).contains("rolled back"), "\(again.stdout)\(again.stderr)"
        )
    }

    /// Half of every frame dies: gc compresses and seals the live members again as new frames,
    /// which verify and restore must open.
    @Test func gcResealsFramesWhoseMembersDied() throws {
        backup()
        let file = try File.open(image, .readWrite)
        var gen = TestImage(seed: 3)
        for offset in stride(from: UInt64(0), to: 8 << 20, by: 128 << 10) {
            try file.write(gen.randomBytes(64 << 10), at: offset)
        }
        sleep(1)
        backup()
        #expect(run(["prune", "--repo", repo, "--keep-last", "1"]).status == 0)
        let collected = run(["gc", "--repo", repo])
        #expect(
            collected.status == 0 && collected.stdout.contains(" rewritten into ")
                && !collected.stdout.contains(" 0 rewritten into "), "\(collected.stdout)")
        let verified = run(["verify", "--repo", repo])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        let out = dir.file("out.raw")
        #expect(run(["restore", "--repo", repo, "\(Self.group)@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
    }

    @Test func serveExportsTheDiskAndRefusesADamagedBlock() throws {
        backup()
        let environment = ["CAIRN_PASSWORD_FILE": dir.file("pass")]
        do {
            let server = try ServeProcess(repo: repo, directory: dir.path, environment: environment)
            let compare = try QemuTools.run("qemu-img", ["compare", "-f", "raw", "-F", "raw", image, server.uri])
            #expect(compare.status == 0, "\(compare.standardOutput)\(compare.standardError)")
            _ = server.stop()
        }
        let pack = try #require(Fixture.files(under: repo, suffix: ".pack").first)
        try Fixture.flip(pack, at: Fixture.fileSize(pack) / 2)
        try? FileManager.default.removeItem(atPath: dir.file("serve.sock"))
        let server = try ServeProcess(repo: repo, directory: dir.path, environment: environment)
        let copy = dir.file("copy.raw")
        let convert = try QemuTools.run("qemu-img", ["convert", "-f", "raw", "-O", "raw", server.uri, copy])
        #expect(convert.status != 0, "a block that fails authentication is never sent")
        _ = server.stop()
    }
}
