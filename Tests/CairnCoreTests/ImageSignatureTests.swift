import CairnTestSupport
import Testing

@testable import CairnCore

/// Signatures that `qemu-img create` cannot make: a DMG trailer, and the VHD footer's checksum
/// that keeps a raw disk whose last sector merely says "conectix" raw.
@Suite("image signatures")
struct ImageSignatureTests {
    static func vhdFooter(checksumOK: Bool) -> [UInt8] {
        var footer = [UInt8](repeating: 0, count: 512)
        footer.replaceSubrange(0..<8, with: Array("conectix".utf8))
        footer[15] = 2  // features
        var sum: UInt32 = 0
        for (index, byte) in footer.enumerated() where !(64..<68).contains(index) { sum &+= UInt32(byte) }
        let checksum = checksumOK ? ~sum : ~sum &+ 1
        for i in 0..<4 { footer[64 + i] = UInt8(truncatingIfNeeded: checksum >> (24 - 8 * UInt32(i))) }
        return footer
    }

    @Test func vhdFooterNeedsItsChecksum() {
        let head = [UInt8](repeating: 0, count: 512)
        #expect(ImageSignature.identify(head: head, tail: Self.vhdFooter(checksumOK: true)) == .foreign(.vpc))
        #expect(ImageSignature.identify(head: head, tail: Self.vhdFooter(checksumOK: false)) == .none)
    }

    @Test func dmgTrailer() {
        var tail = [UInt8](repeating: 0, count: 512)
        tail.replaceSubrange(0..<12, with: Array("koly".utf8) + [0, 0, 0, 4, 0, 0, 2, 0])
        #expect(ImageSignature.identify(head: [UInt8](repeating: 0, count: 512), tail: tail) == .foreign(.dmg))
        tail[7] = 3  // another version: not a DMG trailer
        #expect(ImageSignature.identify(head: [UInt8](repeating: 0, count: 512), tail: tail) == .none)
    }

    @Test func shortFilesAndNames() {
        #expect(ImageSignature.identify(head: [], tail: []) == .none)
        #expect(ImageSignature.identify(head: Array("QFI".utf8), tail: []) == .none)
        #expect(ImageSignature.identify(head: [0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 3], tail: []) == .qcow2)
        #expect(ImageSignature.claimed(byName: "/vm/a.QCOW2") == .qcow2)
        #expect(ImageSignature.claimed(byName: "/vm.qcow2/disk") == nil)
        #expect(ImageSignature.claimed(byName: "/vm/.vmdk") == nil)
        #expect(ImageSignature.claimed(byName: "/vm/disk.img") == nil)
    }
}
