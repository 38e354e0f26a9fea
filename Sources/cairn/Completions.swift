import ArgumentParser
import CairnCore

#if canImport(Glibc)
    import Glibc
#endif

/// What the shell completes for cairn's arguments beyond subcommands and flags: file and
/// directory names, the formats, and restore point ids read from the repository being named.
///
/// The generated scripts (`cairn --generate-completion-script bash|zsh|fish`) call back into
/// cairn for the ids, so a completion lists what the repository holds at that moment.
enum Completions {
    /// `GROUP@TIME` of every restore point and `GROUP@latest` of every group in the repository the
    /// command line names (`--repo`, else `$CAIRN_REPO`, else ./cairn-repo). Quiet: a missing or
    /// unreadable repository completes nothing.
    static let restorePoints = CompletionKind.custom { words, _, prefix in
        restorePointWords(repository: repositoryPath(in: words), prefix: prefix)
    }

    /// The image formats `--format` takes.
    static let formats = CompletionKind.list(ImageFormat.allCases.map(\.rawValue))

    /// The VMDK subformats `--subformat` takes.
    static let vmdkSubformats = CompletionKind.list(["monolithicSparse", "streamOptimized"])

    /// Images and other files.
    static let files = CompletionKind.file()

    /// Directories (`--repo`, `--to DIR`).
    static let directories = CompletionKind.directory

    static func repositoryPath(in words: [String]) -> String {
        var path: String?
        for (i, word) in words.enumerated() {
            if word == "--repo", i + 1 < words.count {
                path = words[i + 1]
            } else if word.hasPrefix("--repo=") {
                path = String(word.dropFirst("--repo=".count))
            }
        }
        if let path { return path }
        if let env = getenv("CAIRN_REPO"), !String(cString: env).isEmpty { return String(cString: env) }
        return RepositoryOptions.defaultRepository
    }

    static func restorePointWords(repository: String, prefix: String) -> [String] {
        guard let opened = try? Repository(path: repository, loadIndex: false),
            let points = try? opened.catalog.allPoints()
        else { return [] }
        var words = points.map(\.description)
        var groups = Set<String>()
        for point in points where groups.insert(point.group).inserted { words.append("\(point.group)@latest") }
        return words.filter { $0.hasPrefix(prefix) }.sorted()
    }
}
