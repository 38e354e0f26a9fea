/// `withUnsafeBytes` and `withUnsafeMutableBytes` for bodies with typed throws.
///
/// The standard library's versions rethrow `any Error`, so a `throws(CairnError)` body loses its
/// type through them; without these, every such call site needs a captured `var failure` that
/// is checked after the closure. Here the error travels in a `Result`, in one place.
extension Array where Element == UInt8 {
    func withBytesThrowing<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try withUnsafeBytes { raw in Result { () throws(E) -> R in try body(raw) } }.get()
    }

    mutating func withMutableBytesThrowing<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try withUnsafeMutableBytes { raw in Result { () throws(E) -> R in try body(raw) } }.get()
    }
}
