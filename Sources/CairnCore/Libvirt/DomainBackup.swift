import Foundation
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// What `cairn backup --domain` did, beside the restore point itself.
public struct DomainBackupResult: Sendable {
    public var backup: BackupResult
    /// `pull` (a running domain, through libvirt's backup job) or `files` (a shut-off domain).
    public var mode: String
    public var checkpoint: String?
    /// Clean-up that did not succeed, stale jobs that were ended: worth reading, not failures.
    public var warnings: [String]
}
/// Makes one restore point of a libvirt domain: every disk, and its inactive XML as a settings file.
///
/// A running domain is read through libvirt's backup API in pull mode: `backup-begin` freezes a
/// point in time (QEMU copies old data to a scratch file before a guest write overwrites it) and
/// exports each disk read-only over NBD on a unix socket; Cairn reads every export like any NBD
/// source and then ends the job with `domjobabort`, which also removes the scratch files. The job
/// is ended on every path out: success, error, and a clean stop by SIGINT/SIGTERM (the pipeline
/// throws `.interrupted` and the `defer` below runs). A job left by a cairn killed outright is
/// recognised by its socket path at the next run and ended then.
///
/// Each pull backup creates a libvirt checkpoint (`cairn-REPO-TIME`, recorded in the manifest
/// with its XML) and, once the restore point is committed, removes this repository's older ones.
/// The next night is incremental from it (`DomainBackup+Checkpoints.swift`): each qcow2 disk's
/// export then carries `qemu:dirty-bitmap:backup-TARGET`, read through the change-tracking path
/// and its trust rule, so clean blocks come from the previous restore point. When the checkpoint
/// is unusable (lost by libvirt and not redefinable, refused, a new or a raw disk) the disk is
/// read in full and the manifest says why; that never fails the night.
///
/// A shut-off domain's disk files are read directly, in the format its XML names.
public final class DomainBackup {
    public let repository: Repository
    public let domainName: String
    public var virsh = Virsh()
    /// The group to back up into; the domain's name when nil.
    public var group: String?
    /// Where the per-backup directory (NBD socket, scratch files) goes; must be on a file system
    /// with room for what the guest rewrites during the backup.
    public var scratchDirectory = "/var/tmp"
    public var lockWait: Double?
    public var nbdTimeout = NBDClient.Configuration.defaultTimeout
    /// Further settings files to keep beside the domain XML.
    public var settingsFiles: [String] = []
    /// Freeze the guest's filesystems through its agent around `backup-begin` (`--quiesce`).
    public var quiesce = false
    /// Read every disk in full once this many nights have been incremental since the last full read.
    public var fullEvery: Int?
    /// Clean blocks per disk to read anyway and check against the previous restore point.
    public var sampleBlocks = ChangeTrackingOptions.defaultSampleBlocks
    public var progress: (@Sendable (BackupProgress) -> Void)?

    /// Names this backup's directory `cairn-libvirt-PID-…`, so a later run can tell a dead
    /// cairn's job and directory from a live one's.
    static let workPrefix = "cairn-libvirt-"

    public init(repository: Repository, domainName: String) {
        self.repository = repository
        self.domainName = domainName
    }

    public func run() throws(CairnError) -> DomainBackupResult {
        let group = self.group ?? domainName
        guard GroupName.isValid(group) else {
            throw CairnError(
                .usage,
                "domain name \(domainName) is not a valid group name (letters, digits, -, _, .); name one with --group")
        }
        let state = try domainState()
        let live = state != "shut off" && state != "crashed"
        // The inactive XML is what `virsh define` takes back; the disks being read are the live ones.
        let inactiveXML = try virsh.run(["dumpxml", "--inactive", domainName])
        let definition = try DomainDefinition(xml: live ? try virsh.run(["dumpxml", domainName]) : inactiveXML)
        guard !definition.disks.isEmpty else {
            throw CairnError(.notFound, "domain \(domainName) has no disks to back up")
        }
        var warnings = sweepDeadWorkDirectories()
        let work = try makeWorkDirectory()
        defer { removeWorkDirectory(work) }
        let settingsPath = "\(work)/\(definition.name).xml"
        try FileSystem.writeAtomically(Array(inactiveXML.utf8), to: settingsPath)

        var record = Manifest.DomainRecord(
            name: definition.name, uuid: definition.uuid, uri: virsh.uri, mode: live ? "pull" : "files",
            settingsFile: FileSystem.baseName(settingsPath), checkpoint: nil,
            disks: definition.disks.map { .init(target: $0.target, format: $0.format, path: $0.source) })
        var sources: [BackupSource]
        var checkpoint: String?
        var jobStarted = false
        defer {
            if jobStarted, let warning = endJob() { warnings.append(warning) }
        }
        if live {
            if let warning = try endStaleJob() { warnings.append(warning) }
            var plan = planIncremental(group: group, definition: definition, work: work, warnings: &warnings)
            let name = checkpointName()
            let socket = "\(work)/nbd.sock"
            try Cancellation.check()
            let frozen = quiesce && freezeFilesystems(&warnings)
            do {
                defer { if frozen { thawFilesystems(&warnings) } }
                do {
                    try beginBackup(
                        definition, socket: socket, work: work, checkpoint: name, plan: plan, started: &jobStarted)
                } catch  where plan.from != nil && !jobStarted && error.code != .interrupted {
                    // Bitmaps libvirt finds broken or missing: a full read costs one night's time,
                    // failing would cost the restore point.
                    plan = .full(
                        "libvirt refused an incremental backup from checkpoint \(plan.from ?? ""): \(error.cause ?? error.message)"
                    )
                    warnings.append("domain \(domainName) is read in full: \(plan.reason ?? "")")
                    try beginBackup(
                        definition, socket: socket, work: work, checkpoint: name, plan: plan, started: &jobStarted)
                }
            }
            checkpoint = name
            record.checkpoint = name
            record.incremental = plan.from
            record.fullReason = plan.reason
            record.quiesced = frozen
            record.checkpointXML = checkpointXML(name, warnings: &warnings)
            sources = definition.disks.map { disk in
                var source = BackupSource(
                    path: "nbd+unix:///\(disk.target)?socket=\(socket)", diskName: disk.target)
                source.nbdTimeout = nbdTimeout
                source.changeTracking = changeTracking(for: disk, plan: plan, checkpoint: name)
                return source
            }
        } else {
            sources = definition.disks.map { disk in
                BackupSource(path: disk.source, diskName: disk.target, format: ImageFormat(rawValue: disk.format))
            }
        }

        let job = BackupJob(repository: repository, group: group, sources: sources)
        job.lockWait = lockWait
        job.settingsFiles = [settingsPath] + settingsFiles
        job.domain = record
        job.progress = progress
        let result: BackupResult
        do {
            if live { try TestHook.holdAfterBackupBegin() }
            result = try job.run()
        } catch {
            // No restore point names the new checkpoint: remove it (after the job ends, which the
            // checkpoint outlives) so the next night's chain starts from a recorded one.
            if jobStarted, let warning = endJob() { warnings.append(warning) }
            jobStarted = false
            if let checkpoint, let warning = deleteCheckpoint(checkpoint) { warnings.append(warning) }
            guard warnings.isEmpty else {
                throw CairnError(
                    error.code, "\(error.message) (also: \(warnings.joined(separator: "; ")))", cause: error.cause)
            }
            throw error
        }
        if jobStarted, let warning = endJob() { warnings.append(warning) }
        jobStarted = false
        if let checkpoint { warnings += deleteOlderCheckpoints(keeping: checkpoint) }
        return DomainBackupResult(backup: result, mode: record.mode, checkpoint: checkpoint, warnings: warnings)
    }

    /// `running`, `paused`, `shut off`, … (virsh's words, with `LC_ALL=C`).
    private func domainState() throws(CairnError) -> String {
        let output = try virsh.run(["domstate", domainName])
        let state = output.split(whereSeparator: \.isNewline).first.map { String($0).trimmingSpaces } ?? ""
        guard !state.isEmpty else {
            throw CairnError(.hypervisor, "virsh domstate \(domainName) printed no state")
        }
        return state
    }

    /// Starts libvirt's pull-mode job: a scratch file and an NBD export per disk, and the new
    /// checkpoint. With an incremental plan, each disk with a bitmap in `plan.from` is exported
    /// with the changes since it (`qemu:dirty-bitmap:backup-TARGET`); the others in full.
    private func beginBackup(
        _ definition: DomainDefinition, socket: String, work: String, checkpoint: String, plan: IncrementalPlan,
        started: inout Bool
    ) throws(CairnError) {
        let incremental = plan.from.map { "<incremental>\(Self.escape($0))</incremental>" } ?? ""
        let backupXML =
            "<domainbackup mode='pull'>\(incremental)<server transport='unix' socket='\(Self.escape(socket))'/><disks>"
            + definition.disks.map { disk in
                let target = Self.escape(disk.target)
                var mode = ""
                if plan.from != nil {
                    mode = plan.disks.contains(disk.target) ? " backupmode='incremental'" : " backupmode='full'"
                }
                let scratch = Self.escape("\(work)/scratch-\(disk.target).qcow2")
                return
                    "<disk name='\(target)' backup='yes' type='file'\(mode) exportname='\(target)' exportbitmap='\(Self.escape(Self.exportBitmap(disk.target)))'><scratch file='\(scratch)'/></disk>"
            }.joined() + "</disks></domainbackup>"
        // A raw disk cannot carry a bitmap: it takes part in the backup but not in the checkpoint.
        let checkpointXML =
            "<domaincheckpoint><name>\(Self.escape(checkpoint))</name><description>cairn backup of group \(Self.escape(group ?? domainName))</description><disks>"
            + definition.disks.map {
                "<disk name='\(Self.escape($0.target))' checkpoint='\($0.format == "qcow2" ? "bitmap" : "no")'/>"
            }.joined() + "</disks></domaincheckpoint>"
        let backupFile = "\(work)/backup.xml"
        let checkpointFile = "\(work)/checkpoint.xml"
        try FileSystem.writeAtomically(Array(backupXML.utf8), to: backupFile)
        try FileSystem.writeAtomically(Array(checkpointXML.utf8), to: checkpointFile)
        do {
            try virsh.run(["backup-begin", domainName, backupFile, checkpointFile])
            started = true
        } catch {
            // virsh may have died (Ctrl-C reaches the whole process group) after libvirt started
            // the job: end it if it is ours, which its socket path tells.
            if ownJobRunning(socket: socket) {
                started = true
            }
            throw error
        }
    }

    /// The name the export of disk `target` offers its changes under.
    static func exportBitmap(_ target: String) -> String { "backup-\(target)" }

    /// Whether the domain's current backup job serves `socket`.
    private func ownJobRunning(socket: String) -> Bool {
        let xml = virsh.attempt(["backup-dumpxml", domainName])
        return xml.ok && xml.output.contains(socket)
    }

    /// Ends the backup job; returns a warning when libvirt refused.
    private func endJob() -> String? {
        let abort = virsh.attempt(["domjobabort", domainName])
        if abort.ok { return nil }
        return
            "the backup job of domain \(domainName) could not be ended (run virsh domjobabort \(domainName)): \(abort.error)"
    }

    /// Ends a backup job that a killed cairn left: its NBD socket lies in a `cairn-libvirt-PID-…`
    /// directory of a process that no longer runs. Any other job is left alone and fails the
    /// backup, since libvirt runs one job per domain.
    private func endStaleJob() throws(CairnError) -> String? {
        let info = try virsh.run(["domjobinfo", domainName])
        let jobType =
            info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("Job type:") }
            .map { String($0.dropFirst("Job type:".count)).trimmingSpaces } ?? "None"
        guard jobType != "None" else { return nil }
        let xml = virsh.attempt(["backup-dumpxml", domainName])
        if xml.ok, let range = xml.output.range(of: "/\(Self.workPrefix)", options: .backwards),
            let pid = DeadProcessFiles.pid(in: String(xml.output[range.upperBound...]), after: ""),
            pid != getpid(), !ProcessLiveness.isAlive(pid)
        {
            if let warning = endJob() { throw CairnError(.hypervisor, warning) }
            return "ended a backup job of domain \(domainName) left by cairn process \(pid), which no longer runs"
        }
        throw CairnError(
            .hypervisor,
            "domain \(domainName) already runs a job (\(jobType)); wait for it to finish (virsh domjobinfo \(domainName))"
        )
    }

    /// Freezes the guest's filesystems (`virsh domfsfreeze`, through the QEMU guest agent) so the
    /// backup's moment is one the guest's filesystems consider clean. False, with a warning, when
    /// no agent answers: the restore point is then crash-consistent, which a journaling guest
    /// recovers from as from a power cut. The freeze lasts only until `backup-begin` returns.
    private func freezeFilesystems(_ warnings: inout [String]) -> Bool {
        var agent = virsh
        agent.timeout = Self.agentTimeout
        let frozen = agent.attempt(["domfsfreeze", domainName])
        if frozen.ok { return true }
        // A freeze that timed out may still have happened in the guest: thaw to be sure.
        _ = agent.attempt(["domfsthaw", domainName])
        warnings.append(
            "--quiesce: the guest agent of domain \(domainName) did not freeze its filesystems (\(frozen.error)); the restore point is crash-consistent"
        )
        return false
    }

    private func thawFilesystems(_ warnings: inout [String]) {
        var agent = virsh
        agent.timeout = Self.agentTimeout
        let thawed = agent.attempt(["domfsthaw", domainName])
        if !thawed.ok {
            warnings.append(
                "the filesystems of domain \(domainName) could not be thawed (run virsh domfsthaw \(domainName)): \(thawed.error)"
            )
        }
    }

    /// Seconds a guest agent may take to freeze or thaw: a frozen guest blocks its writers.
    static let agentTimeout: Double = 30

    /// A private directory for the NBD socket and scratch files. QEMU runs as `libvirt-qemu`
    /// and creates the socket, so the directory belongs to that user (mode 0700: only it and
    /// root reach the socket, which serves the whole disk).
    private func makeWorkDirectory() throws(CairnError) -> String {
        var template = Array("\(scratchDirectory)/\(Self.workPrefix)\(getpid())-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        guard made else {
            throw CairnError.io("create a directory in", scratchDirectory, Errno(rawValue: errno))
        }
        let path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        for user in ["libvirt-qemu", "qemu"] {
            if let entry = getpwnam(user) {
                if chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid) == 0 { return path }
            }
        }
        // Unknown QEMU user: let it in, as libvirt's own default socket directories do.
        chmod(path, 0o777)
        return path
    }

    private func removeWorkDirectory(_ path: String) {
        for name in (try? FileSystem.list(path)) ?? [] { try? FileSystem.remove("\(path)/\(name)") }
        FileSystem.removeDirectory(path)
    }

    /// Removes work directories of cairn processes that were killed before they could.
    private func sweepDeadWorkDirectories() -> [String] {
        var warnings: [String] = []
        for name in (try? FileSystem.list(scratchDirectory)) ?? [] {
            guard let pid = DeadProcessFiles.pid(in: name, after: Self.workPrefix), pid > 0, pid != getpid(),
                !ProcessLiveness.isAlive(pid)
            else { continue }
            let path = "\(scratchDirectory)/\(name)"
            // A stale job still holds its socket there; the check before backup-begin ends it.
            removeWorkDirectory(path)
            if FileSystem.exists(path) { warnings.append("could not remove \(path), left by a killed cairn") }
        }
        return warnings
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "'": out += "&apos;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }
}

/// Test-only pauses: with `CAIRN_TEST_HOLD_AFTER_BACKUP_BEGIN=PATH`, a domain backup creates
/// `PATH.begun` once libvirt's job runs and waits (a clean stop still works) until `PATH` exists,
/// so a test can write to the guest, or signal cairn, at a known moment of the backup. With
/// `CAIRN_TEST_HOLD_BEFORE_COMMIT=PATH` any backup does the same just before it writes its
/// manifest (a test runs gc in that moment).
enum TestHook {
    static func holdAfterBackupBegin() throws(CairnError) {
        try hold("CAIRN_TEST_HOLD_AFTER_BACKUP_BEGIN")
    }

    static func hold(_ variable: String) throws(CairnError) {
        guard let raw = getenv(variable) else { return }
        let path = String(cString: raw)
        try FileSystem.writeAtomically([], to: "\(path).begun")
        while !FileSystem.exists(path) {
            try Cancellation.check()
            usleep(20_000)
        }
    }
}
