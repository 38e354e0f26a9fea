import Foundation
import FoundationXML

/// A libvirt checkpoint's XML (`formatcheckpoint.rst`), as `virsh checkpoint-dumpxml --no-domain`
/// prints it and a restore point keeps it (`Manifest.DomainRecord.checkpointXML`).
///
/// Kept so that a host that lost its checkpoint metadata (libvirtd re-installed, the VM defined
/// afresh or migrated) can redefine the checkpoint with `virsh checkpoint-create --redefine`
/// while QEMU still holds its bitmaps. The XML comes back from a repository, so it is parsed
/// strictly and bounded before it reaches libvirt: its name must be the one the restore point
/// records, and it must describe a checkpoint, nothing else.
struct CheckpointDefinition: Sendable, Equatable {
    var name: String
    /// Disk target → `bitmap` or `no`.
    var disks: [String: String]
    /// The XML to redefine the checkpoint with: without `<parent>` (Cairn keeps one checkpoint,
    /// so the parent is gone by the time the next night needs it) and without `<domain>`.
    var redefinitionXML: String

    /// Checkpoint XML without the domain is a few hundred bytes per disk.
    static let maxSize = 64 << 10

    init(xml: String, expectedName: String) throws(CairnError) {
        guard xml.utf8.count <= Self.maxSize else {
            throw CairnError(
                .damaged, "the checkpoint XML of \(expectedName) is \(xml.utf8.count) bytes, more than one can be")
        }
        let document: XMLDocument
        do {
            document = try XMLDocument(xmlString: xml, options: [])
        } catch {
            throw CairnError(.damaged, "the checkpoint XML of \(expectedName) does not parse", cause: "\(error)")
        }
        guard let root = document.rootElement(), root.name == "domaincheckpoint" else {
            throw CairnError(.damaged, "the checkpoint XML of \(expectedName) has no <domaincheckpoint> root element")
        }
        guard let name = root.child("name")?.stringValue?.trimmingSpaces, name == expectedName else {
            throw CairnError(.damaged, "the checkpoint XML kept for \(expectedName) names another checkpoint")
        }
        self.name = name
        var disks: [String: String] = [:]
        for disk in root.child("disks")?.elements(forName: "disk") ?? [] {
            guard let target = disk.attribute("name"), GroupName.isValid(target) else {
                throw CairnError(.damaged, "the checkpoint XML of \(name) has a disk without a plain name")
            }
            disks[target] = disk.attribute("checkpoint") ?? "bitmap"
        }
        self.disks = disks
        for element in root.elements(forName: "parent") + root.elements(forName: "domain") { element.detach() }
        redefinitionXML = document.xmlString
    }
}
