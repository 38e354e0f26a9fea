import CairnCore
import FuzzSupport

/// The repository's `config` file and its copy `config.copy`: every command reads them first.
///
/// Input: one options byte, then the config file. Options: bit 0 repairs its checksum (the
/// `sha256:HEX` field, computed with HEX as zeros), so mutations reach the fields behind it;
/// bit 1 writes the input as the copy too, bit 2 removes the copy (else the copy stays the
/// intact one `cairn init` wrote, and a damaged config falls back to it); bit 3 runs
/// `cairn repair` after opening. The repository is opened and, if it opens, verified.
@main
enum ConfigTarget {
    static func main() {
        let scratch = Scratch("config")
        let repository = FuzzRepository(in: scratch)
        let intactCopy = (try? FileSystem.readAll("\(repository.path)/config.copy")) ?? []
        FuzzDriver.run { buffer in
            var input = FuzzInput(buffer)
            let options = input.byte()
            var config = input.rest()
            if options & 1 != 0 { repairChecksum(&config) }
            repository.clear()
            scratch.write(config, to: "repo/config")
            if options & 2 != 0 {
                scratch.write(config, to: "repo/config.copy")
            } else if options & 4 != 0 {
                scratch.remove("repo/config.copy")
            } else {
                scratch.write(intactCopy, to: "repo/config.copy")
            }
            guard let opened = try? repository.open() else { return }
            if options & 8 != 0 { _ = try? opened.repair(lockWait: nil) }
            _ = try? RepositoryVerifier(repository: opened).run()
        }
    }

    /// Fills in the checksum of the first `"sha256:` + 64 characters the file holds.
    static func repairChecksum(_ config: inout [UInt8]) {
        let prefix = Array("\"sha256:".utf8)
        guard config.count >= prefix.count + 64,
            let start = (0...(config.count - prefix.count - 64)).first(where: {
                Array(config[$0..<($0 + prefix.count)]) == prefix
            })
        else { return }
        let hex = (start + prefix.count)..<(start + prefix.count + 64)
        config.replaceSubrange(hex, with: [UInt8](repeating: UInt8(ascii: "0"), count: 64))
        config.replaceSubrange(hex, with: Array(SHA256Hasher().digest(config).hex.utf8))
    }
}
