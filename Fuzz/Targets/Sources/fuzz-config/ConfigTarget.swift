import CairnCore
import FuzzSupport

/// The repository's `config` file: every command reads it first.
///
/// Input: the config file. It replaces the config of an empty repository, which is then
/// opened and, if it opens, verified (which uses the block size and the store it configures).
@main
enum ConfigTarget {
    static func main() {
        let scratch = Scratch("config")
        let repository = FuzzRepository(in: scratch)
        FuzzDriver.run { input in
            repository.clear()
            scratch.write(input, to: "repo/config")
            guard let opened = try? repository.open() else { return }
            _ = try? RepositoryVerifier(repository: opened).run()
        }
    }
}
