import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Talks to libvirt by running `virsh`, the client libvirt ships, one command per call.
///
/// Cairn drives libvirt through `virsh` rather than linking `libvirt.so`: the cairn binary then
/// runs on hosts without libvirt, and each call is one of libvirt's documented commands whose
/// output is either XML (parsed strictly by `DomainDefinition` and friends) or a short status
/// line. A call that exits non-zero becomes a `.hypervisor` error carrying virsh's own message.
public struct Virsh: Sendable {
    public static let defaultURI = "qemu:///system"

    /// The libvirt connection URI (`--connect`).
    public var uri: String
    /// Seconds one call may take before it is killed and reported.
    public var timeout: Double = 300

    /// Output beyond this is refused: domain XML and checkpoint lists are small.
    static let maxOutput = 16 << 20

    public init(uri: String = Virsh.defaultURI) { self.uri = uri }

    /// Runs `virsh -c URI ARGUMENTS…` and returns its standard output.
    @discardableResult
    public func run(_ arguments: [String]) throws(CairnError) -> String {
        let outcome = try execute(arguments)
        guard outcome.status == 0 else {
            throw CairnError(
                .hypervisor, "virsh \(arguments.prefix(2).joined(separator: " ")) failed (\(uri))",
                cause: outcome.errorText)
        }
        return outcome.output
    }

    /// Like `run`, but returns the failure instead of throwing it, for clean-up calls whose
    /// failure is reported as a warning.
    func attempt(_ arguments: [String]) -> (ok: Bool, output: String, error: String) {
        do {
            let outcome = try execute(arguments)
            return (outcome.status == 0, outcome.output, outcome.errorText)
        } catch {
            return (false, "", error.description)
        }
    }

    private struct Outcome {
        var status: Int32
        var output: String
        var errorText: String
    }

    private func execute(_ arguments: [String]) throws(CairnError) -> Outcome {
        guard let executable = Self.executablePath else {
            throw CairnError(.hypervisor, "virsh is not installed (apt-get install libvirt-clients)")
        }
        let run: ChildProcess.Outcome
        do throws(CairnError) {
            // Status words ("shut off", "None") are parsed: keep virsh's messages in English.
            run = try ChildProcess.run(
                executable, ["-q", "-c", uri] + arguments, environment: ["LC_ALL": "C"], timeout: timeout,
                maxOutput: Self.maxOutput)
        } catch {
            throw CairnError(.hypervisor, "cannot run \(executable)", cause: error.cause)
        }
        let errorText = String(decoding: run.errorOutput, as: UTF8.self)
            .split(whereSeparator: \.isNewline).map { String($0).trimmingSpaces }.filter { !$0.isEmpty }
            .joined(separator: "; ")
        if let signal = run.signal {
            let why =
                run.timedOut
                ? "virsh did not answer within \(Int(timeout)) s and was stopped"
                : "virsh was killed by signal \(signal)"
            return Outcome(status: run.status, output: "", errorText: why + (errorText.isEmpty ? "" : ": \(errorText)"))
        }
        return Outcome(status: run.status, output: String(decoding: run.output, as: UTF8.self), errorText: errorText)
    }

    private static let executablePath: String? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") + ["/usr/bin", "/usr/sbin"] {
            let candidate = "\(directory)/virsh"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }()
}
