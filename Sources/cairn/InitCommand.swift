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

    @Flag(
        help:
            "Encrypt the repository: a new master key, wrapped by the passphrase (--password-command, $CAIRN_PASSWORD_FILE, else a prompt)."
    )
    var encryption = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let size = try parseSize(blockSize, option: "--block-size")
            guard size <= UInt64(Int.max) else { throw CairnError(.usage, "--block-size \(blockSize) is too large") }
            var key: NewKey?
            if encryption { key = NewKey(passphrase: try repository.passphraseSource.newPassphrase()) }
            let config: RepositoryConfig
            if let storage = try repository.objectStorage() {
                // Leases, not flocks: the feature keeps an older Cairn (which would take flocks no
                // other host sees) out.
                config = try Repository.create(
                    in: storage, blockSize: Int(size), compressionLevel: compressionLevel, encryption: key,
                    features: [FormatFeature.objectStore])
            } else {
                config = try Repository.create(
                    at: repository.path, blockSize: Int(size), compressionLevel: compressionLevel, encryption: key)
            }
            if json {
                print(
                    try JSONCoding.encode(
                        InitSummary(
                            repository: repository.path, blockSize: config.blockSize,
                            compressionLevel: config.compressionLevel, encrypted: encryption ? true : nil,
                            keyFingerprint: config.encryption?.fingerprint)))
                return
            }
            print(
                "created \(encryption ? "encrypted " : "")repository \(repository.path) (block size \(Units.formatBytes(UInt64(config.blockSize))), zstd level \(config.compressionLevel))"
            )
            if encryption {
                Terminal.printError(
                    "cairn: keep the passphrase, and a copy of the key (`cairn key export --paper`), apart from the repository: without them no one can read these backups"
                )
            }
        }
    }
}

/// `cairn init --json`: a contract for scripts; extend, do not rename.
struct InitSummary: Encodable {
    var repository: String
    var blockSize: Int
    var compressionLevel: Int
    /// Present (true) for an encrypted repository.
    var encrypted: Bool?
    /// The master key's fingerprint, for an encrypted repository.
    var keyFingerprint: String?
}
