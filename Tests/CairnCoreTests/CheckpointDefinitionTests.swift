import Testing

@testable import CairnCore

/// The checkpoint XML a restore point keeps comes back from a repository: it is redefined in
/// libvirt only if it parses, names the checkpoint the restore point records, and is small.
@Suite struct CheckpointDefinitionTests {
    /// As `virsh checkpoint-dumpxml --no-domain` printed it for a two-disk domain (libvirt 9.0).
    static let dumped = """
        <domaincheckpoint>
          <name>cairn-3b707100-20261201T192137Z</name>
          <description>cairn backup of group exp1</description>
          <parent>
            <name>cairn-3b707100-20261201T192131Z</name>
          </parent>
          <creationTime>1796152898</creationTime>
          <disks>
            <disk name='vda' checkpoint='bitmap' bitmap='cairn-3b707100-20261201T192137Z'/>
            <disk name='vdb' checkpoint='no'/>
          </disks>
        </domaincheckpoint>
        """

    @Test func parsesAndDropsTheParent() throws {
        let checkpoint = try CheckpointDefinition(xml: Self.dumped, expectedName: "cairn-3b707100-20261201T192137Z")
        #expect(checkpoint.disks == ["vda": "bitmap", "vdb": "no"])
        #expect(!checkpoint.redefinitionXML.contains("<parent>"))
        #expect(!checkpoint.redefinitionXML.contains("20261201T192131Z"))
        #expect(checkpoint.redefinitionXML.contains("<creationTime>1796152898</creationTime>"))
        // What is redefined parses again as the same checkpoint.
        let again = try CheckpointDefinition(xml: checkpoint.redefinitionXML, expectedName: checkpoint.name)
        #expect(again == checkpoint)
    }

    @Test(arguments: [
        ("<domaincheckpoint><name>other</name></domaincheckpoint>", "names another checkpoint"),
        ("<domain><name>c1</name></domain>", "no <domaincheckpoint> root"),
        (#"{"json": true}"#, "the checkpoint XML of c1"),
        ("<domaincheckpoint><name>c1</name><disks><disk name='../x'/></disks></domaincheckpoint>", "plain name"),
        ("<domaincheckpoint><name>c1</name>" + String(repeating: " ", count: 70_000) + "</domaincheckpoint>", "bytes"),
    ])
    func refusesWhatIsNotThisCheckpoint(xml: String, message: String) {
        #expect {
            _ = try CheckpointDefinition(xml: xml, expectedName: "c1")
        } throws: { error in
            guard let error = error as? CairnError else { return false }
            return error.code == .damaged && error.description.contains(message)
        }
    }
}
