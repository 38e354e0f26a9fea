/// An image seen through a trusted `ChangedBlockMap`: its extents gain the third state,
/// `.unchanged`, so the backup takes the base restore point's digests for them without reading.
///
/// Zeros come first: a range the image reports as zeros stays `.zero` (a hole costs nothing
/// whatever the map says). A range that holds data is `.unchanged` where the map calls it clean
/// and `.data` where it may have been written. Reads go to the image unchanged.
///
/// A wrong "clean" loses data silently, so only a map the backup decided to trust
/// (`DiskChangeTracking`) is put here, and an error from the map is kept (`takeMapFailure()`)
/// so the backup can give the map up and read the disk in full instead of failing.
final class ChangeTrackedImage: DiskImage {
    let image: any DiskImage
    let changes: any ChangedBlockMap
    private var mapFailure: CairnError?

    init(_ image: any DiskImage, changes: any ChangedBlockMap) {
        self.image = image
        self.changes = changes
    }

    var virtualSize: UInt64 { image.virtualSize }
    var info: SourceImageInfo { image.info }
    var supportsConcurrentReads: Bool { image.supportsConcurrentReads }

    func extent(at offset: UInt64, maxLength: UInt64) throws(CairnError) -> ImageExtent {
        let allocation = try image.extent(at: offset, maxLength: maxLength)
        guard allocation.state == .data else { return allocation }
        let change: ChangeExtent
        do {
            change = try changes.changes(at: offset, maxLength: allocation.length)
        } catch {
            mapFailure = error
            throw error
        }
        let length = max(1, min(allocation.length, change.length))
        return ImageExtent(length: length, state: change.isDirty ? .data : .unchanged)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) {
        try image.read(into: buffer, at: offset)
    }

    /// The map's error, if the last failed `extent` came from the map (once).
    func takeMapFailure() -> CairnError? {
        defer { mapFailure = nil }
        return mapFailure
    }
}
