import CairnCore
import CairnS3
import CairnTestSupport
import Foundation
import Testing

/// The commands beyond backup and restore on the bucket, each judged by a tool no one here
/// wrote where there is one: `serve` read by qemu-img, an archive written from the bucket and
/// imported into another prefix, the index rebuilt from the packs after its segments are gone.
extension ObjectStoreCLITests {
    func backedUpImage(seed: UInt64, group: String = "vm") throws -> String {
        let image = dir.file("\(group).raw")
        var gen = TestImage(seed: seed)
        try gen.makeImage(at: image, size: 12 << 20, extent: 1 << 20, stride: 2 << 20)
        let backup = cairn(["backup", "--repo", url, "--group", group, image])
        #expect(backup.status == 0, "\(backup.stderr)")
        return image
    }

    @Test func serveExportsARestorePointOfTheBucketToQemu() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        let image = try backedUpImage(seed: 71)
        let server = try ServeProcess(repo: url, directory: dir.path, environment: environment())
        defer { _ = server.stop() }
        let copy = dir.file("served.raw")
        try QemuTools.check("qemu-img", ["convert", "-f", "raw", "-O", "raw", server.uri, copy])
        #expect(try QemuTools.run("qemu-img", ["compare", "-f", "raw", "-F", "raw", image, copy]).status == 0)
    }

    /// Volumes `cairn archive write --repo URL POINT --to BASE` wrote (BASE.001, ...).
    func writeArchive(_ point: String, base: String) throws -> [String] {
        let written = cairn(["archive", "write", "--repo", url, point, "--to", dir.file(base)])
        #expect(written.status == 0, "\(written.stderr)")
        let volumes = try FileManager.default.contentsOfDirectory(atPath: dir.path)
            .filter { $0.hasPrefix(base + ".") }.sorted().map { dir.file($0) }
        #expect(!volumes.isEmpty)
        let verified = cairn(["archive", "verify"] + volumes)
        #expect(verified.status == 0, "\(verified.stderr)")
        return volumes
    }

    /// Imports `volumes` into a new prefix (made by `init` first unless `initFirst` is false),
    /// and checks that the restore point restores to `image` and the repository verifies.
    func importsAndRestores(_ volumes: [String], _ image: String, initFirst: Bool) throws {
        let otherPrefix = S3TestStore.uniquePrefix("import")
        let other = "s3://\(S3TestStore.bucket)/\(otherPrefix)"
        defer {
            let cleanup = S3Storage(client: storage.client, bucket: S3TestStore.bucket, prefix: otherPrefix)
            if let keys = try? cleanup.list(prefix: "") { try? cleanup.delete(keys) }
        }
        if initFirst { #expect(cairn(["init", "--repo", other]).status == 0) }
        let imported = cairn(["archive", "import", "--repo", other] + volumes + ["--json"])
        #expect(imported.status == 0, "\(imported.stderr)")
        let out = dir.file("imported-\(UUID().uuidString).raw")
        let restored = cairn(["restore", "--repo", other, "vm@latest", "--to", out])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
        let verified = cairn(["verify", "--repo", other])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        if !initFirst {
            let config = try S3Storage(client: storage.client, bucket: S3TestStore.bucket, prefix: otherPrefix)
                .readIfPresent("config", limit: 1 << 20)
            let features = Fixture.json(String(decoding: config ?? [], as: UTF8.self))["features"] as? [String]
            #expect(features?.contains("object-store") == true && features?.contains("encryption") == true)
        }
    }

    @Test func anArchiveOfTheBucketImportsIntoAnotherPrefix() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        let image = try backedUpImage(seed: 72)
        let volumes = try writeArchive("vm@latest", base: "tape")
        try importsAndRestores(volumes, image, initFirst: true)
        // An unencrypted archive cannot make its repository: one line saying how to.
        let empty = "s3://\(S3TestStore.bucket)/\(S3TestStore.uniquePrefix("empty"))"
        let refused = cairn(["archive", "import", "--repo", empty] + volumes)
        #expect(refused.status != 0 && refused.stderr.contains("cairn init --repo \(empty)"), "\(refused.stderr)")
    }

    /// An encrypted archive carries its repository's id and keys: imported into an empty prefix,
    /// it makes the repository there, which opens with the same passphrase.
    @Test func anEncryptedArchiveMakesItsRepositoryInAnEmptyPrefix() throws {
        try "pass1\n".write(toFile: dir.file("pass"), atomically: true, encoding: .utf8)
        #expect(cairn(["init", "--repo", url, "--encryption"]).status == 0)
        let image = try backedUpImage(seed: 74)
        let volumes = try writeArchive("vm@latest", base: "sealed")
        try importsAndRestores(volumes, image, initFirst: false)
    }

    @Test func rebuildIndexRecoversTheIndexFromThePacks() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        let image = try backedUpImage(seed: 73)
        let segments = try storage.list(prefix: "index/")
        #expect(!segments.isEmpty)
        try storage.delete(segments)
        // A fresh cache: this host's copies of the deleted segments must not answer for them.
        let fresh = ["CAIRN_CACHE_DIR": dir.file("cache-after")]
        let refused = cairn(["restore", "--repo", url, "vm@latest", "--to", dir.file("early.raw")], environment: fresh)
        #expect(refused.status != 0)
        let rebuilt = cairn(["rebuild-index", "--repo", url, "--json"], environment: fresh)
        #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
        #expect(try !storage.list(prefix: "index/").isEmpty)
        let out = dir.file("rebuilt.raw")
        #expect(cairn(["restore", "--repo", url, "vm@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
        let verified = cairn(["verify", "--repo", url])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
    }

    /// A damaged config in the bucket falls back to its copy, verify says so (exit 7), and
    /// `cairn repair` writes the config back from the copy; a lost copy is written again.
    @Test func repairRestoresADamagedConfigFromItsCopyInTheBucket() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        let image = try backedUpImage(seed: 75)
        let config = try #require(try storage.readIfPresent("config", limit: 1 << 20))
        var damaged = config
        damaged[damaged.count / 2] ^= 0x20
        try storage.publish(damaged, as: "config", .replace)
        let listed = cairn(["list", "--repo", url])
        #expect(listed.status == 0 && listed.stderr.contains("config.copy"), "\(listed.stderr)")
        let verify = cairn(["verify", "--repo", url])
        #expect(verify.status == 7 && verify.stderr.contains("damaged"), "\(verify.stderr)")
        let repair = cairn(["repair", "--repo", url])
        #expect(repair.status == 0 && repair.stdout.contains("from config.copy"), "\(repair.stdout)\(repair.stderr)")
        #expect(try storage.readIfPresent("config", limit: 1 << 20) == config)
        #expect(cairn(["verify", "--repo", url]).status == 0)

        try storage.delete(["config.copy"])
        #expect(cairn(["verify", "--repo", url]).stderr.contains("missing"))
        #expect(cairn(["repair", "--repo", url]).status == 0)
        #expect(try storage.readIfPresent("config.copy", limit: 1 << 20) == config)
        let out = dir.file("repaired.raw")
        #expect(cairn(["restore", "--repo", url, "vm@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
    }
}
