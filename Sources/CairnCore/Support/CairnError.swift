public import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// Every failure Cairn reports: a stable code, one line a person can act on, and the cause.
///
/// The code decides the process exit status (see README, "Exit codes"), so scripts can tell
/// "the repository is busy" from "the data is damaged" without parsing text.
public struct CairnError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable, Equatable {
        /// The command line or its arguments are wrong.
        case usage
        /// The repository is missing, is not a Cairn repository, or has a format we do not know.
        case repository
        /// A restore point, disk, group or archive that was named does not exist.
        case notFound
        /// Another Cairn process holds a lock this command needs.
        case busy
        /// A source image is malformed, hostile, or uses a feature Cairn refuses.
        case badImage
        /// Stored data failed a checksum or digest: something is damaged.
        case damaged
        /// An output path exists and `--force` was not given.
        case exists
        /// The operating system refused a read, a write or another call.
        case io
        /// An archive volume or stream is malformed, truncated or out of order.
        case badArchive
        /// SIGINT or SIGTERM stopped the command before it finished (see `Cancellation`).
        case interrupted
        /// The hypervisor (libvirt, through `virsh`) refused or failed an operation.
        case hypervisor
        /// The passphrase given opens none of an encrypted repository's or archive's keys.
        case passphrase
    }

    public var code: Code
    public var message: String
    /// The operating system's error, when the kernel refused a call: kept as a value, so callers
    /// can tell "the disk is full" (`.noSpace`) from "permission denied" without reading text.
    public var errno: Errno?
    /// Any other underlying cause, in words (a library's message).
    public var detail: String?
    /// What the person at the command line can do about it, when the CLI has a flag for it. The
    /// library does not know its command line; `cairn` turns this into a hint ("pass --force").
    public var remedy: Remedy?

    /// A way out that the command line offers and the library does not name.
    public enum Remedy: String, Sendable, Equatable {
        /// Wait for another process's lock (`--lock-wait`).
        case waitForLock
        /// Overwrite an output that exists (`--force`).
        case overwrite
        /// Name one of the restore point's disks (`--disk`).
        case nameDisk
        /// Read the source image as raw (`--format raw`).
        case readAsRaw
        /// Read the source image as the qcow2 it holds, or as raw (`--format qcow2`, `--format raw`).
        case readAsQCOW2OrRaw
        /// Accept a crash-inconsistent copy of an image a running VM writes (`--allow-live`).
        case allowLive
        /// Create the repository first (`cairn init`).
        case createRepository
        /// Use a larger archive volume (`--volume-size`).
        case largerVolume
    }

    public init(_ code: Code, _ message: String, cause: String? = nil, remedy: Remedy? = nil) {
        self.code = code
        self.message = message
        self.detail = cause
        self.remedy = remedy
    }

    public init(_ code: Code, _ message: String, errno: Errno, remedy: Remedy? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
        self.remedy = remedy
    }

    /// The underlying cause in words: the errno's description, or the library's message.
    public var cause: String? { errno?.description ?? detail }

    public var description: String {
        if let cause { return "\(message): \(cause)" }
        return message
    }

    /// The documented exit status for this error (README, "Exit codes").
    public var exitCode: Int32 {
        switch code {
        case .usage: return 64
        case .repository: return 3
        case .notFound: return 4
        case .busy: return 5
        case .badImage: return 6
        case .damaged: return 7
        case .exists: return 8
        case .io: return 9
        case .badArchive: return 10
        case .interrupted: return 128 + (Cancellation.signal ?? SIGINT)
        case .hypervisor: return 11
        case .passphrase: return 14
        }
    }

    /// An operating-system failure of `operation` on `path`.
    public static func io(_ operation: String, _ path: String, _ errno: Errno) -> CairnError {
        let hint = errno == .noSpace ? " (the disk is full)" : ""
        return CairnError(.io, "cannot \(operation) \(path)\(hint)", errno: errno)
    }
}
