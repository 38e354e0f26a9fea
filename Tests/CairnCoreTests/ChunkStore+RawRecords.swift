@testable import CairnCore

extension ChunkWriteTransaction {
    /// Stores a record given as bytes (a test's own, or one read back), checked first as a
    /// reader would check it.
    @discardableResult
    mutating func store(record bytes: UnsafeRawBufferPointer) throws(CairnError) -> Stored {
        try store(record: EncodedRecord(checking: bytes))
    }
}
