/// What `cairn verify` found: the `--json` output, a contract for scripts (extend, never rename).
public struct VerifyReport: Codable, Sendable {
    /// True when everything checked is intact.
    public var intact: Bool
    public var scope: VerificationScope
    public var samplePercent: Double?
    /// The slice of the digest space whose chunks were checked (`all digests` for a full run).
    public var digestRange: String
    public var manifestsChecked = 0
    public var segmentsChecked = 0
    public var packsChecked = 0
    /// Index pages read and re-hashed (a page shared by several trees is read for each).
    public var pagesChecked = 0
    /// Distinct chunks decompressed and re-hashed.
    public var chunksChecked = 0
    /// Uncompressed bytes of those chunks.
    public var bytesChecked: UInt64 = 0
    /// Pack records whose CRC was checked (every record in the range, needed or not).
    public var recordsChecked = 0
    public var seconds = 0.0
    public var restorePoints: [PointResult] = []
    public var damagedChunks: [DamagedChunk] = []
    /// Damage in metadata: segments, pack headers and tables, manifests, index trees.
    public var problems: [String] = []
    /// Damaged records no restore point checked needs (superseded copies, garbage): gc removes them.
    public var warnings: [String] = []
    /// Why the result could not be recorded (`TIME.verify`, `verify/damaged.json`), e.g. a full
    /// disk; absent when it was. The verdict above stands either way.
    public var recordingFailure: String?

    public struct PointResult: Codable, Sendable {
        public var id: RestorePointID
        public var result: VerificationResult
        public var blocksChecked: Int
        public var problems: [String]
    }

    /// A damaged chunk and every place that needs it.
    public struct DamagedChunk: Codable, Sendable {
        public var digest: String
        public var kind: String
        public var pack: String?
        public var offset: UInt64?
        public var reason: String
        public var neededBy: [Use]
    }

    /// One disk of one restore point that needs a damaged chunk, and at which guest byte offsets.
    public struct Use: Codable, Sendable {
        public var restorePoint: String
        public var disk: String
        public var offsets: [UInt64]
        /// Offsets beyond the first `VerifyReport.maxOffsetsListed`, counted only.
        public var moreOffsets: Int
    }

    static let maxOffsetsListed = 1000
}

public struct VerifyProgress: Sendable {
    public var phase: String
    public var chunksDone: Int
    public var chunksTotal: Int
    public var bytesDone: UInt64
    public var seconds: Double
}
