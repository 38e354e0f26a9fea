import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A real libvirtd for a test: started (without systemd) by `Tests/libvirt/libvirtd-ctl`, used
/// through `virsh -c qemu:///system`, and stopped again by `close()` with every domain the test
/// defined destroyed and undefined (checkpoint metadata included).
///
/// Test runs that use it are serialised by a lock file, since there is one system libvirtd.
public final class LibvirtHost: @unchecked Sendable {
    public static let uri = "qemu:///system"
    public let stateDirectory: String
    private let startedHere: Bool
    private let lockFD: Int32
    private var domains: [String] = []
    /// `kvm` when /dev/kvm works, else `qemu` (TCG); decided by the first domain that starts.
    public private(set) var domainType = "kvm"

    static let controlScript: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("libvirt/libvirtd-ctl").path
    }()

    /// Starts (or finds) libvirtd; nil, with the reason printed, when it cannot run here.
    public static func start() -> LibvirtHost? {
        let fd = open("/run/lock/cairn-libvirt-tests.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            print("libvirt tests skipped: cannot open /run/lock/cairn-libvirt-tests.lock")
            return nil
        }
        flock(fd, LOCK_EX)
        let state = "/run/cairn-test-libvirtd"
        let outcome = Subprocess.run(controlScript, ["start", state])
        let answer = outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard outcome.status == 0, answer == "started" || answer == "existing" else {
            print("libvirt tests skipped: \(answer.isEmpty ? outcome.stderr : answer)")
            Glibc.close(fd)
            return nil
        }
        return LibvirtHost(state: state, startedHere: answer == "started", lockFD: fd)
    }

    private init(state: String, startedHere: Bool, lockFD: Int32) {
        stateDirectory = state
        self.startedHere = startedHere
        self.lockFD = lockFD
    }

    /// Removes the test's domains and stops the daemons if this host started them.
    public func close() {
        for name in domains {
            virsh(["destroy", name])
            virsh(["undefine", name, "--checkpoints-metadata", "--nvram"])
            if virsh(["domstate", name]).status == 0 { virsh(["undefine", name, "--checkpoints-metadata"]) }
        }
        domains = []
        if startedHere { Subprocess.run(Self.controlScript, ["stop", stateDirectory]) }
        Glibc.close(lockFD)
    }

    @discardableResult
    public func virsh(_ arguments: [String]) -> CairnProcess.Outcome {
        Subprocess.run("/usr/bin/virsh", ["-q", "-c", Self.uri] + arguments)
    }

    /// Runs virsh and fails the caller when it does.
    @discardableResult
    public func checkVirsh(_ arguments: [String]) throws -> String {
        let outcome = virsh(arguments)
        guard outcome.status == 0 else {
            throw QemuToolError(message: "virsh \(arguments.joined(separator: " ")) failed: \(outcome.stderr)")
        }
        return outcome.stdout
    }

    /// Remembers a domain defined outside `defineAndStart` (a restored copy) for `close()`.
    public func track(_ name: String) { domains.append(name) }

    public struct Disk: Sendable {
        public var target: String
        public var path: String
        public var format: String

        public init(target: String, path: String, format: String) {
            self.target = target
            self.path = path
            self.format = format
        }
    }

    /// A domain with no guest OS (SeaBIOS only, 64 MiB) and virtio disks; KVM when it starts,
    /// TCG otherwise.
    public static func domainXML(name: String, type: String, memoryMiB: Int = 64, disks: [Disk]) -> String {
        let diskXML = disks.map {
            "<disk type='file' device='disk'><driver name='qemu' type='\($0.format)'/><source file='\($0.path)'/><target dev='\($0.target)' bus='virtio'/></disk>"
        }.joined(separator: "\n    ")
        return """
            <domain type='\(type)'>
              <name>\(name)</name>
              <memory unit='MiB'>\(memoryMiB)</memory>
              <vcpu>1</vcpu>
              <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/><bios rebootTimeout='-1'/></os>
              <devices>
                \(diskXML)
                <interface type='user'><model type='virtio'/></interface>
                <controller type='usb' model='none'/>
                <video><model type='none'/></video>
                <memballoon model='none'/>
              </devices>
            </domain>
            """
    }

    public func defineAndStart(name: String, disks: [Disk], in directory: String) throws {
        let xmlPath = "\(directory)/\(name).define.xml"
        domains.append(name)
        for type in domainType == "kvm" ? ["kvm", "qemu"] : ["qemu"] {
            try Self.domainXML(name: name, type: type, disks: disks).write(
                toFile: xmlPath, atomically: true, encoding: .utf8)
            try checkVirsh(["define", xmlPath])
            let started = virsh(["start", name])
            if started.status == 0 {
                domainType = type
                return
            }
            virsh(["undefine", name])
            if type == "qemu" { throw QemuToolError(message: "domain \(name) does not start: \(started.stderr)") }
        }
    }

    /// A guest write through the disk's own block backend, so it passes the backup's
    /// copy-before-write filter and dirties bitmaps as a real guest write would.
    public func guestWrite(_ domain: String, disk index: Int, pattern: UInt8, offset: String, length: String) throws {
        let command =
            "qemu-io -d virtio-disk\(index)/virtio-backend \"write -P 0x\(String(pattern, radix: 16)) \(offset) \(length)\""
        let output = try checkVirsh(["qemu-monitor-command", domain, "--hmp", command])
        // --hmp exits 0 even when the command failed: an error shows as output.
        guard output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw QemuToolError(message: "guest write failed: \(output)")
        }
    }

    /// Removes a checkpoint's bitmap from disk `index` inside QEMU, behind libvirt's back (as an
    /// unclean QEMU stop or a replaced image does): libvirt still lists the checkpoint, but its
    /// bitmap is gone.
    public func removeBitmapBehindLibvirt(_ domain: String, disk index: Int, bitmap: String) throws {
        let blocks = try checkVirsh(["qemu-monitor-command", domain, #"{"execute":"query-block"}"#])
        let json = try JSONSerialization.jsonObject(with: Data(blocks.utf8)) as? [String: Any]
        let entries = json?["return"] as? [[String: Any]] ?? []
        let device = "/machine/peripheral/virtio-disk\(index)/virtio-backend"
        guard let entry = entries.first(where: { $0["qdev"] as? String == device }),
            let node = (entry["inserted"] as? [String: Any])?["node-name"] as? String
        else { throw QemuToolError(message: "QEMU lists no block node for \(device): \(blocks)") }
        let command =
            #"{"execute":"block-dirty-bitmap-remove","arguments":{"node":"\#(node)","name":"\#(bitmap)"}}"#
        let output = try checkVirsh(["qemu-monitor-command", domain, command])
        guard output.contains(#""return""#) else { throw QemuToolError(message: "bitmap removal failed: \(output)") }
    }

    /// A raw copy of `image` taken while the domain is paused: the oracle a restore is compared with.
    public func pausedCopy(_ domain: String, image: String, to copy: String) throws {
        try checkVirsh(["suspend", domain])
        defer { virsh(["resume", domain]) }
        try QemuTools.check("qemu-img", ["convert", "-U", "-O", "raw", image, copy])
    }

    /// `Job type:` of `virsh domjobinfo` (`None` when no job runs).
    public func jobType(_ domain: String) -> String {
        let info = virsh(["domjobinfo", domain]).stdout
        let line = info.split(separator: "\n").first { $0.hasPrefix("Job type:") } ?? ""
        return line.dropFirst("Job type:".count).trimmingCharacters(in: .whitespaces)
    }

    public func checkpoints(_ domain: String) -> [String] {
        virsh(["checkpoint-list", domain, "--name"]).stdout.split(separator: "\n").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
    }
}
