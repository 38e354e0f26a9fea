import ArgumentParser
import CairnCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Where the passphrase of an encrypted repository comes from: never the command line itself,
/// where `ps` and shell history would show it.
///
/// In order: `--password-command CMD` (run through `/bin/sh -c`; its standard output is the
/// passphrase), the file named by `$CAIRN_PASSWORD_FILE`, else a prompt on the terminal with
/// echo off. One trailing newline is dropped; the rest is the passphrase, byte for byte.
///
/// Commands on a repository also take a host key instead (`RepositoryOptions.secret`).
struct PassphraseOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Run CMD through /bin/sh and read the passphrase from its output (else $CAIRN_PASSWORD_FILE, else a prompt).",
            valueName: "CMD"))
    var passwordCommand: String?

    /// The passphrase of an existing key.
    func passphrase() throws(CairnError) -> [UInt8] {
        if let passwordCommand { return try Passphrase.fromCommand(passwordCommand, option: "--password-command") }
        if let file = Passphrase.environment("CAIRN_PASSWORD_FILE") {
            return try Passphrase.fromFile(file, what: "$CAIRN_PASSWORD_FILE")
        }
        return try Passphrase.prompt("Passphrase: ", confirm: false)
    }

    /// The passphrase if a source other than the prompt was given (`--password-command`,
    /// `$CAIRN_PASSWORD_FILE`), else nil: `archive verify` then checks what it can without it.
    func givenSource() -> (() throws(CairnError) -> [UInt8])? {
        guard passwordCommand != nil || Passphrase.environment("CAIRN_PASSWORD_FILE") != nil else { return nil }
        return { () throws(CairnError) in try passphrase() }
    }

    /// A passphrase to wrap a new key with (`init --encryption`): the same sources, and a prompt
    /// asks twice.
    func newPassphrase() throws(CairnError) -> [UInt8] {
        if let passwordCommand { return try Passphrase.fromCommand(passwordCommand, option: "--password-command") }
        if let file = Passphrase.environment("CAIRN_PASSWORD_FILE") {
            return try Passphrase.fromFile(file, what: "$CAIRN_PASSWORD_FILE")
        }
        return try Passphrase.prompt("New passphrase: ", confirm: true)
    }
}

/// Where `cairn key add` reads the passphrase it adds: its own options, so that the passphrase
/// that opens the repository and the new one never mix.
struct NewPassphraseOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Read the new passphrase from FILE.", valueName: "FILE"))
    var newPasswordFile: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Instead of a passphrase, make a host key for unattended runs: 32 random bytes written to FILE (mode 0600).",
            valueName: "FILE"))
    var newHostKey: String?

    @Option(
        name: .long, help: ArgumentHelp("Run CMD through /bin/sh for the new passphrase.", valueName: "CMD"))
    var newPasswordCommand: String?

    func passphrase() throws(CairnError) -> [UInt8] {
        if let newPasswordCommand {
            return try Passphrase.fromCommand(newPasswordCommand, option: "--new-password-command")
        }
        if let newPasswordFile { return try Passphrase.fromFile(newPasswordFile, what: "--new-password-file") }
        return try Passphrase.prompt("New passphrase: ", confirm: true)
    }
}

enum Passphrase {
    /// Longer than any passphrase a person or a secret store holds.
    static let maxLength = 4096

    static func environment(_ name: String) -> String? {
        guard let value = getenv(name), value.pointee != 0 else { return nil }
        return String(cString: value)
    }

    static func fromFile(_ path: String, what: String) throws(CairnError) -> [UInt8] {
        let bytes: [UInt8]
        do throws(CairnError) {
            bytes = try FileSystem.readAll(path, limit: maxLength)
        } catch {
            throw CairnError(
                .usage, "cannot read the passphrase file \(path) (\(what)): \(error.message)", cause: error.cause)
        }
        return try checked(trimmed(bytes), source: "the passphrase file \(path)")
    }

    static func fromCommand(_ command: String, option: String) throws(CairnError) -> [UInt8] {
        let outcome: ChildProcess.Outcome
        do throws(CairnError) {
            outcome = try ChildProcess.run("/bin/sh", ["-c", command], maxOutput: maxLength + 1)
        } catch {
            throw CairnError(.usage, "cannot run the \(option)", cause: error.description)
        }
        guard outcome.status == 0 else {
            let said = String(decoding: outcome.errorOutput, as: UTF8.self).split(whereSeparator: \.isNewline).first
            throw CairnError(
                .usage, "the \(option) exited with status \(outcome.status): no passphrase was read",
                cause: said.map(String.init))
        }
        guard outcome.output.count <= maxLength else {
            throw CairnError(.usage, "the \(option) printed more than \(maxLength) bytes: that is not a passphrase")
        }
        return try checked(trimmed(outcome.output), source: "the \(option)")
    }

    /// Asks on the controlling terminal with echo off (twice when `confirm`).
    static func prompt(_ question: String, confirm: Bool) throws(CairnError) -> [UInt8] {
        let fd = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            throw CairnError(
                .usage,
                "no passphrase: set CAIRN_PASSWORD_FILE or pass --password-command (there is no terminal to ask on)")
        }
        defer { close(fd) }
        let first = try readHidden(fd, question)
        let passphrase = try checked(first, source: "the passphrase typed")
        if confirm {
            guard try readHidden(fd, "Again: ") == first else {
                throw CairnError(.usage, "the two passphrases typed differ: nothing was changed")
            }
        }
        return passphrase
    }

    private static func readHidden(_ fd: Int32, _ question: String) throws(CairnError) -> [UInt8] {
        _ = question.withCString { write(fd, $0, strlen($0)) }
        var saved = termios()
        let isTerminal = tcgetattr(fd, &saved) == 0
        if isTerminal {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            _ = tcsetattr(fd, TCSAFLUSH, &quiet)
        }
        defer {
            if isTerminal { _ = tcsetattr(fd, TCSAFLUSH, &saved) }
            _ = write(fd, "\n", 1)
        }
        var line = [UInt8]()
        var byte: UInt8 = 0
        while true {
            let n = read(fd, &byte, 1)
            if n < 0 && errno == EINTR {
                if Cancellation.isRequested {
                    throw CairnError(.interrupted, "stopped while asking for the passphrase")
                }
                continue
            }
            if n <= 0 || byte == UInt8(ascii: "\n") { break }
            line.append(byte)
            if line.count > maxLength { throw CairnError(.usage, "the passphrase typed is too long") }
        }
        return trimmed(line)
    }

    /// Drops one trailing newline (`\n` or `\r\n`).
    static func trimmed(_ bytes: [UInt8]) -> [UInt8] {
        var bytes = bytes
        if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        return bytes
    }

    static func checked(_ bytes: [UInt8], source: String) throws(CairnError) -> [UInt8] {
        guard !bytes.isEmpty else { throw CairnError(.usage, "\(source) is empty: a passphrase is needed") }
        return bytes
    }
}
