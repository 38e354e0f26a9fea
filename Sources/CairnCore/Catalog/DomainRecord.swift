extension Manifest {
    /// The libvirt domain a restore point was made of (`cairn backup --domain`): enough to restore
    /// it as a domain again (`cairn restore --domain`) and to know which checkpoint it started.
    public struct DomainRecord: Codable, Sendable, Equatable {
        public var name: String
        public var uuid: String?
        /// The libvirt connection it was read through (`qemu:///system`).
        public var uri: String
        /// `pull`: a running domain, read through the NBD exports of libvirt's backup job;
        /// `files`: a shut-off domain, its disk files read directly.
        public var mode: String
        /// The settings file holding the inactive domain XML (`NAME.xml`).
        public var settingsFile: String
        /// The libvirt checkpoint created at this restore point's moment (pull mode only).
        public var checkpoint: String?
        public var disks: [Disk]
        /// The checkpoint's XML (`virsh checkpoint-dumpxml --no-domain`), so that a host that lost
        /// its checkpoint metadata can redefine it for the next night (pull mode only).
        public var checkpointXML: String? = nil
        /// The previous restore point's checkpoint the disks were read incrementally from: the
        /// one this restore point's reading depended on. Absent for a full read.
        public var incremental: String? = nil
        /// Why a pull backup read its disks in full (no usable checkpoint); absent when incremental.
        public var fullReason: String? = nil
        /// Pull mode: true if the guest agent froze the filesystems for the backup's moment
        /// (`--quiesce`); false means the restore point is crash-consistent.
        public var quiesced: Bool? = nil

        public struct Disk: Codable, Sendable, Equatable {
            /// The guest target (`vda`), also the disk's name in `Manifest.disks`.
            public var target: String
            /// `raw` or `qcow2`: the format the disk had, and is restored in.
            public var format: String
            /// The image file or block device the domain used.
            public var path: String
        }
    }
}
