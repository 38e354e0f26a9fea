import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Hostile pack files met while writing the `pack` fuzz target (Fuzz/README.md): offsets read from a pack
/// must be bounded before arithmetic, so each is refused as damaged instead of trapping.
@Suite struct HostilePackTests {
    static let id = PackID(high: 0x1122_3344_5566_7788, low: 0x99aa_bbcc_ddee_ff00)

    /// A pack of a header, `table` at `tableOffset` as its footer claims, and the footer.
    static func pack(tableOffset: UInt64, table: [UInt8], count: UInt32) -> [UInt8] {
        var bytes = PackFormat.headerMagic + id.bytes + [UInt8](repeating: 0, count: 8) + table
        func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        bytes += le(tableOffset) + le(count) + le(CRC32.checksum(table)) + id.bytes + PackFormat.footerMagic
        return bytes
    }

    static func readTable(_ bytes: [UInt8]) throws -> CairnError? {
        let directory = TemporaryDirectory()
        let path = directory.file("\(id.hex).pack")
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        do throws(CairnError) {
            _ = try PackReader(path: path, id: id).readTable()
            return nil
        } catch {
            return error
        }
    }

    /// The footer's table offset near 2^64: `tableOffset + tableLength + footer` overflowed.
    @Test func tableOffsetNearTheTopOfUInt64IsRefused() throws {
        let error = try Self.readTable(Self.pack(tableOffset: UInt64.max - 20, table: [], count: 0))
        #expect(error?.code == .damaged)
        #expect(error?.message.contains("does not fit the file") == true)
    }

    /// A table entry (with a valid table CRC) whose record offset is near 2^64: `offset + header
    /// + stored length` overflowed.
    @Test func recordOffsetNearTheTopOfUInt64IsRefused() throws {
        var entry = [UInt8](repeating: 0xAB, count: 32)
        func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        entry +=
            le(UInt64.max - 20) + le(UInt32(100)) + le(UInt32(100)) + [0, 0, 0, 0] + le(UInt32(0))
            + le(UInt32.max)
        #expect(entry.count == PackFormat.tableEntrySize)
        let error = try Self.readTable(
            Self.pack(tableOffset: UInt64(PackFormat.headerSize), table: entry, count: 1))
        #expect(error?.code == .damaged)
        #expect(error?.message.contains("does not fit the pack") == true)
    }
}
