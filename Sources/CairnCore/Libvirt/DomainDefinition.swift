import Foundation
import FoundationXML

/// What Cairn needs from a libvirt domain XML (`formatdomain.rst`): its name, UUID and disks.
///
/// Parsed strictly: XML that does not parse, a domain without a name, a disk without a target,
/// two disks with one target, or a disk Cairn cannot read (a network disk, a format other than
/// raw or qcow2) is an error naming the disk, never a silently skipped disk. CD-ROMs, floppies
/// and LUNs are not disks of the VM's own and are left out.
public struct DomainDefinition: Sendable, Equatable {
    public var name: String
    public var uuid: String?
    public var disks: [Disk]

    public struct Disk: Sendable, Equatable {
        /// The guest-visible target (`vda`, `sdb`): the disk's name in the restore point.
        public var target: String
        /// `file` or `block`.
        public var type: String
        /// The image file or block device.
        public var source: String
        /// `raw` or `qcow2` (libvirt's `<driver type=…>`; raw when absent, as libvirt assumes).
        public var format: String
    }

    public init(xml: String) throws(CairnError) {
        let document = try Self.parse(xml)
        guard let root = document.rootElement(), root.name == "domain" else {
            throw CairnError(.hypervisor, "the domain XML has no <domain> root element")
        }
        guard let name = root.child("name")?.stringValue?.trimmingSpaces, !name.isEmpty else {
            throw CairnError(.hypervisor, "the domain XML has no <name>")
        }
        self.name = name
        uuid = root.child("uuid")?.stringValue?.trimmingSpaces
        var disks: [Disk] = []
        for element in root.child("devices")?.elements(forName: "disk") ?? [] {
            let device = element.attribute("device") ?? "disk"
            guard device == "disk" else { continue }
            guard let target = element.child("target")?.attribute("dev"), !target.isEmpty else {
                throw CairnError(.hypervisor, "domain \(name) has a disk without <target dev=…>")
            }
            guard GroupName.isValid(target) else {
                throw CairnError(.hypervisor, "domain \(name) has a disk target \"\(target)\" that is not a plain name")
            }
            guard !disks.contains(where: { $0.target == target }) else {
                throw CairnError(.hypervisor, "domain \(name) names disk target \(target) twice")
            }
            let type = element.attribute("type") ?? "file"
            let sourceElement = element.child("source")
            let source: String?
            switch type {
            case "file": source = sourceElement?.attribute("file")
            case "block": source = sourceElement?.attribute("dev")
            default:
                throw CairnError(
                    .hypervisor,
                    "disk \(target) of domain \(name) is a \(type) disk; Cairn backs up file and block disks only")
            }
            guard let source, !source.isEmpty else {
                throw CairnError(.hypervisor, "disk \(target) of domain \(name) has no source file or device")
            }
            let format = element.child("driver")?.attribute("type") ?? "raw"
            guard format == "raw" || format == "qcow2" else {
                throw CairnError(
                    .hypervisor,
                    "disk \(target) of domain \(name) is in format \(format); Cairn reads raw and qcow2 disks")
            }
            disks.append(Disk(target: target, type: type, source: source, format: format))
        }
        self.disks = disks
    }

    static func parse(_ xml: String) throws(CairnError) -> XMLDocument {
        guard xml.utf8.count <= Virsh.maxOutput else {
            throw CairnError(.hypervisor, "the domain XML is \(xml.utf8.count) bytes, more than a domain XML can be")
        }
        do {
            // No external entities or DTDs are loaded: the XML comes from libvirt or a repository.
            return try XMLDocument(xmlString: xml, options: [.nodePreserveWhitespace])
        } catch {
            throw CairnError(.hypervisor, "the domain XML does not parse", cause: "\(error)")
        }
    }
}

extension XMLElement {
    func child(_ name: String) -> XMLElement? { elements(forName: name).first }

    func attribute(_ name: String) -> String? { attribute(forName: name)?.stringValue }
}
