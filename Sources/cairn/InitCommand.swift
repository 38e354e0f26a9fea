import ArgumentParser
import CairnCore

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Create a new, empty repository.")

    @OptionGroup var repository: RepositoryOptions

    @Option(help: "Block size: a power of two from 4K to 4M.")
    var blockSize = "64K"

    @Option(help: "zstd compression level (1-19).")
    var compressionLevel = RepositoryConfig.defaultCompressionLevel

    @Flag(help: "Print the summary as a JSON object.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let size = try parseSize(blockSize, option: "--block-size")
            guard size <= UInt64(Int.max) else { throw CairnError(.usage, "--block-size \(blockSize) is too large") }
            let config = try Repository.create(
                at: repository.path, blockSize: Int(size), compressionLevel: compressionLevel)
            if json {
                print(
                    try JSONCoding.encode(
                        InitSummary(
                            repository: repository.path, blockSize: config.blockSize,
                            compressionLevel: config.compressionLevel)))
                return
            }
            print(
                "created repository \(repository.path) (block size \(Units.formatBytes(UInt64(config.blockSize))), zstd level \(config.compressionLevel))"
            )
        }
    }
}

/// `cairn init --json`: a contract for scripts; extend, do not rename.
struct InitSummary: Encodable {
    var repository: String
    var blockSize: Int
    var compressionLevel: Int
}
