/// qcow2 output for restore. (Lands with the qcow2 issue's writer.)
enum QCOW2RestoreTarget {
    static func make(path: String, walk: DiskWalk, clusterSize: UInt64, force: Bool) throws(CairnError) -> any RestoreTarget {
        throw CairnError(.usage, "restoring to qcow2 is not available yet")
    }
}
