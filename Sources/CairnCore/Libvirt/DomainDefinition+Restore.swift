import Foundation
import FoundationXML

extension DomainDefinition {
    /// A restored disk: where its image now is and in which format.
    public struct RestoredDisk: Sendable {
        public var path: String
        public var format: String

        public init(path: String, format: String) {
            self.path = path
            self.format = format
        }
    }

    /// The domain XML with each restored disk pointing at its new image.
    ///
    /// Every `<disk device='disk'>` named in `disks` becomes a file disk on the restored image, in
    /// its format, without a `<backingStore>` (the restored image is flat). With `newName` the
    /// copy is made to run beside the original: the new name, no `<uuid>` and no interface
    /// `<mac>` (libvirt generates fresh ones on define), no `<nvram>` path (libvirt makes a new
    /// variable store from its template instead of sharing the original's).
    public static func rewritten(
        xml: String, disks: [String: RestoredDisk], newName: String?
    ) throws(CairnError) -> String {
        let document = try parse(xml)
        guard let root = document.rootElement(), root.name == "domain" else {
            throw CairnError(.hypervisor, "the domain XML has no <domain> root element")
        }
        var rewrittenTargets = Set<String>()
        for element in root.child("devices")?.elements(forName: "disk") ?? [] {
            guard (element.attribute("device") ?? "disk") == "disk",
                let target = element.child("target")?.attribute("dev"), let restored = disks[target]
            else { continue }
            element.setAttribute("type", "file")
            for name in ["source", "backingStore"] {
                for old in element.elements(forName: name) { old.detach() }
            }
            let source = XMLElement(name: "source")
            source.setAttribute("file", restored.path)
            if let driver = element.child("driver") {
                driver.setAttribute("type", restored.format)
                driver.insertSibling(source)
            } else {
                let driver = XMLElement(name: "driver")
                driver.setAttribute("name", "qemu")
                driver.setAttribute("type", restored.format)
                element.insertChild(driver, at: 0)
                driver.insertSibling(source)
            }
            rewrittenTargets.insert(target)
        }
        if let missing = Set(disks.keys).subtracting(rewrittenTargets).sorted().first {
            throw CairnError(.hypervisor, "the domain XML has no disk \(missing) to point at its restored image")
        }
        if let newName {
            guard let name = root.child("name") else { throw CairnError(.hypervisor, "the domain XML has no <name>") }
            name.stringValue = newName
            for uuid in root.elements(forName: "uuid") { uuid.detach() }
            for interface in root.child("devices")?.elements(forName: "interface") ?? [] {
                for mac in interface.elements(forName: "mac") { mac.detach() }
            }
            for nvram in root.child("os")?.elements(forName: "nvram") ?? [] { nvram.detach() }
        }
        return document.xmlString
    }
}

extension XMLElement {
    func setAttribute(_ name: String, _ value: String) {
        if let existing = attribute(forName: name) {
            existing.stringValue = value
        } else {
            if let attribute = XMLNode.attribute(withName: name, stringValue: value) as? XMLNode {
                addAttribute(attribute)
            }
        }
    }

    /// Inserts `node` right after this element in its parent.
    func insertSibling(_ node: XMLNode) {
        guard let parent = parent as? XMLElement else { return }
        parent.insertChild(node, at: index + 1)
    }
}
