import ArgumentParser
import CairnCore

#if canImport(Glibc)
    import Glibc
#endif

/// `cairn demo`: a first backup and restore on a generated disk, end to end, in one command.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Try Cairn: make a sample disk, back it up twice, restore both restore points and compare.")

    @Option(help: "Working directory for the sample disk, the repository and the restored copies.")
    var dir = "cairn-demo"

    @Option(help: "Size of the sample disk.")
    var size = "256M"

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let diskSize = try parseSize(size, option: "--size")
            guard diskSize >= 1 << 20 else { throw CairnError(.usage, "--size must be at least 1M") }
            if FileSystem.exists(dir), !(try FileSystem.list(dir)).isEmpty {
                throw CairnError(.exists, "\(dir) exists and is not empty: remove it or pass --dir")
            }
            try FileSystem.createDirectories(dir)
            let image = "\(dir)/disk.img"
            let repoPath = "\(dir)/repo"
            var generator = SampleDisk(seed: 2026)
            print("1. making a \(Units.formatBytes(diskSize)) sample disk \(image) (sparse, ~40% written)")
            try generator.create(path: image, size: diskSize)
            let night0 = try SampleDisk.digest(of: image)

            try Repository.create(
                at: repoPath, blockSize: RepositoryConfig.defaultBlockSize,
                compressionLevel: RepositoryConfig.defaultCompressionLevel)
            print("2. created repository \(repoPath)")
            let repo = try Repository(path: repoPath)
            let first = try BackupJob(repository: repo, group: "demo", sources: [BackupSource(path: image)]).run()
            report("3. night 0:", first)

            try generator.scatterWrites(path: image, count: 40)
            let night1 = try SampleDisk.digest(of: image)
            // Restore point ids have one-second resolution.
            sleepSeconds(1)
            let second = try BackupJob(repository: repo, group: "demo", sources: [BackupSource(path: image)]).run()
            report("4. night 1 (40 scattered writes):", second)

            for (step, label, result, expected) in [(5, "night 0", first, night0), (6, "night 1", second, night1)] {
                let out = "\(dir)/restored-\(label.replacingOccurrences(of: " ", with: "")).img"
                let restored = try RestoreJob(
                    repository: repo, request: RestoreRequest(id: result.id, disk: nil, destination: out)
                ).run()
                let same = try SampleDisk.digest(of: out) == expected
                print(
                    "\(step). restored \(result.id) to \(out) in \(Units.formatDecimal(restored.seconds, places: 2)) s: \(same ? "identical to the \(label) disk" : "DIFFERENT")"
                )
                guard same else { throw CairnError(.damaged, "the restored \(label) disk differs from the original") }
            }
            print("demo complete: try `cairn list --repo \(repoPath)` and `cairn show --repo \(repoPath) demo@latest`")
        }
    }

    private func report(_ label: String, _ result: BackupResult) {
        let s = result.manifest.stats
        print(
            "\(label) \(result.id): read \(Units.formatBytes(s.bytesRead)), \(Units.formatBytes(s.bytesNew)) new, \(Units.formatBytes(s.bytesStored)) stored, \(Units.formatDecimal(s.seconds, places: 2)) s"
        )
    }
}

func sleepSeconds(_ seconds: UInt32) {
    _ = sleep(seconds)
}
