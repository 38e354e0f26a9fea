import ArgumentParser
import CairnCore

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Create a new, empty repository.")

    @OptionGroup var repository: RepositoryOptions

    @Option(help: "Block size: a power of two from 4K to 4M.")
    var blockSize = "64K"

    @Option(help: "zstd compression level (1-19).")
    var compressionLevel = RepositoryConfig.defaultCompressionLevel

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let size = try parseSize(blockSize, option: "--block-size")
            guard size <= UInt64(Int.max) else { throw CairnError(.usage, "--block-size \(blockSize) is too large") }
            let config = try Repository.create(
                at: repository.path, blockSize: Int(size), compressionLevel: compressionLevel)
            print(
                "created repository \(repository.path) (block size \(Units.formatBytes(UInt64(config.blockSize))), zstd level \(config.compressionLevel))"
            )
        }
    }
}
