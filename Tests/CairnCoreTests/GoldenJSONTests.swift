import Testing

@testable import CairnCore

/// Files written by the Cairn before the model was typed (generated with `cairn backup` of a raw
/// file, a raw file with a settings file, a qcow2 with `--cbt` twice, and an NBD export served by
/// qemu-nbd; `cairn verify` in full and with `--sample 50`), decoded and encoded again: the
/// model must write them back byte for byte, so the on-disk formats cannot drift.
@Suite struct GoldenJSONTests {
    static let manifests: [String: String] = [
        "cbt": #"""
        {"blockSize":65536,"disks":[{"blockCount":64,"bytesRead":65536,"bytesSkipped":0,"cbt":{"nightsSinceFullRead":0,"reason":"no previous restore point of this group holds disk b.qcow2","started":"cairn.cbt.20261201T200238Z","used":false},"changedBlocks":1,"depth":1,"name":"b.qcow2","root":"f6978b5a8637bc96b49a473e51e9d5e895316cefa5a549fcabc6e47ab6788931","size":4194304,"source":{"backingChain":[],"clusterSize":65536,"format":"qcow2","path":"b.qcow2","qcow2Version":3,"virtualSize":4194304},"sourceKind":"file","zeroBlocks":63}],"format":1,"group":"cbt","id":"cbt@2026-12-01T20:02:38Z","repository":"f05d1a60de9b2eea442b54f6552f43f9","stats":{"bytesNew":65536,"bytesRead":65536,"bytesStored":199,"chunksNew":2,"seconds":0.086087415998918},"time":"2026-12-01T20:02:38Z","tool":"cairn 0.1.0"}
        sha256 3c858dbcf4f40c82be07bafa35c0867aa4b0254ac1d66762492676c32fd7d58e

        """#,
        "cbtCBT2": #"""
        {"blockSize":65536,"disks":[{"blockCount":64,"bytesRead":131072,"bytesSkipped":0,"cbt":{"bitmap":"cairn.cbt.20261201T200238Z","nightsSinceFullRead":1,"sampledBlocks":1,"started":"cairn.cbt.20261201T200240Z","used":true},"changedBlocks":1,"depth":1,"name":"b.qcow2","root":"8db7b7c55a2c6b991c75165dcb871b8f3e641e7e9b1ddda9a0ecddb751a1789e","size":4194304,"source":{"backingChain":[],"clusterSize":65536,"format":"qcow2","path":"b.qcow2","qcow2Version":3,"virtualSize":4194304},"sourceKind":"file","zeroBlocks":62}],"format":1,"group":"cbt","id":"cbt@2026-12-01T20:02:40Z","previous":"cbt@2026-12-01T20:02:38Z","repository":"f05d1a60de9b2eea442b54f6552f43f9","stats":{"bytesNew":65536,"bytesRead":131072,"bytesStored":234,"chunksNew":2,"seconds":0.8235107519994926},"time":"2026-12-01T20:02:40Z","tool":"cairn 0.1.0"}
        sha256 736bb68f8a81b2c14a37163f56e3c0e8f193e07db024d3fd3d5dfb39cf93458a

        """#,
        "file": #"""
        {"blockSize":65536,"disks":[{"blockCount":64,"bytesRead":65536,"bytesSkipped":0,"changedBlocks":1,"depth":1,"name":"a.raw","root":"ac44c70bc432015ffe8f03d6e55516643229c153da57cfaf5b89f842142c1458","size":4194304,"source":{"format":"raw","path":"a.raw","virtualSize":4194304},"sourceKind":"file","zeroBlocks":63}],"format":1,"group":"file","id":"file@2026-12-01T20:02:30Z","repository":"f05d1a60de9b2eea442b54f6552f43f9","stats":{"bytesNew":65536,"bytesRead":65536,"bytesStored":211,"chunksNew":2,"seconds":0.12041363199932675},"time":"2026-12-01T20:02:30Z","tool":"cairn 0.1.0"}
        sha256 8fd0563f758ec58e684151d3fb184465c4a85e20baedcd51412adb8963dd0399

        """#,
        "nbd": #"""
        {"blockSize":65536,"disks":[{"blockCount":64,"bytesRead":65536,"bytesSkipped":0,"changedBlocks":1,"depth":1,"name":"nbd","root":"ac44c70bc432015ffe8f03d6e55516643229c153da57cfaf5b89f842142c1458","size":4194304,"source":{"format":"raw","kind":"nbd","path":"nbd+unix:///?socket=/tmp/mg/nbd.sock","virtualSize":4194304},"sourceKind":"nbd","zeroBlocks":63}],"format":1,"group":"nbd","id":"nbd@2026-12-01T20:02:43Z","repository":"f05d1a60de9b2eea442b54f6552f43f9","stats":{"bytesNew":0,"bytesRead":65536,"bytesStored":0,"chunksNew":0,"seconds":0.17563604999850213},"time":"2026-12-01T20:02:43Z","tool":"cairn 0.1.0"}
        sha256 7b119d7373eee606d546e593570d435994dac29490b5277491de8e31dabad746

        """#,
        "settings": #"""
        {"blockSize":65536,"disks":[{"blockCount":64,"bytesRead":65536,"bytesSkipped":0,"changedBlocks":1,"depth":1,"name":"a.raw","root":"ac44c70bc432015ffe8f03d6e55516643229c153da57cfaf5b89f842142c1458","size":4194304,"source":{"format":"raw","path":"a.raw","virtualSize":4194304},"sourceKind":"file","zeroBlocks":63}],"format":1,"group":"settings","id":"settings@2026-12-01T20:02:37Z","repository":"f05d1a60de9b2eea442b54f6552f43f9","settings":[{"chunks":["1d6f543461ac4f9ab8eda0919bb8e28d396223d18f10f9545ccc3fb3b0f6a8b9"],"digest":"1d6f543461ac4f9ab8eda0919bb8e28d396223d18f10f9545ccc3fb3b0f6a8b9","name":"vm.xml","size":32}],"stats":{"bytesNew":0,"bytesRead":65536,"bytesStored":80,"chunksNew":1,"seconds":0.19186131499918702},"time":"2026-12-01T20:02:37Z","tool":"cairn 0.1.0"}
        sha256 b49511609540c5cac665fb03fb897838311ac925ef667df574ba62e9f7593ad1

        """#,
    ]

    static let verificationRecords: [String: String] = [
        "full": #"""
        {
          "chunksChecked" : 1,
          "damagedChunks" : 0,
          "problems" : [

          ],
          "result" : "intact",
          "scope" : "full",
          "time" : "2026-12-01T20:02:44Z"
        }

        """#,
        "sample": #"""
        {
          "chunksChecked" : 0,
          "damagedChunks" : 0,
          "problems" : [

          ],
          "result" : "intact",
          "samplePercent" : 50,
          "scope" : "sample",
          "time" : "2026-12-01T20:02:50Z"
        }

        """#,
    ]

    @Test(arguments: manifests.keys.sorted())
    func manifestsRoundTripByteForByte(_ name: String) throws {
        let bytes = Array(try #require(Self.manifests[name]).utf8)
        let manifest = try Manifest.decode(bytes, path: name)
        #expect(try manifest.encoded() == bytes)
        // The JSON line alone, as `show --json` prints a manifest.
        let line = Array(bytes[..<bytes.firstIndex(of: 10)!])
        #expect(Array(try JSONCoding.encode(try JSONCoding.decode(Manifest.self, from: line, what: name)).utf8) == line)
    }

    @Test func everyKindOfManifestIsCovered() throws {
        let decoded = try Self.manifests.map { name, text in try Manifest.decode(Array(text.utf8), path: name) }
        #expect(decoded.contains { $0.settings?.isEmpty == false })
        #expect(decoded.contains { $0.disks.contains { $0.cbt?.used == true } })
        #expect(decoded.contains { $0.disks.contains { $0.source.kind == .nbd } })
        #expect(decoded.contains { $0.previous != nil })
    }

    @Test(arguments: verificationRecords.keys.sorted())
    func verificationRecordsRoundTripByteForByte(_ name: String) throws {
        let text = try #require(Self.verificationRecords[name])
        let record = try JSONCoding.decode(VerificationRecord.self, from: Array(text.utf8), what: name)
        #expect(try JSONCoding.encode(record, pretty: true) + "\n" == text)
    }

    @Test func idsDigestsAndTimesEncodeAsTheirStrings() throws {
        let id = try #require(RestorePointID(parsing: "vm@2026-11-26T03:00:00Z"))
        let digest = SHA256Hasher().digest(Array("x".utf8))
        #expect(try JSONCoding.encode([id]) == #"["vm@2026-11-26T03:00:00Z"]"#)
        #expect(try JSONCoding.encode([id.time]) == #"["2026-11-26T03:00:00Z"]"#)
        #expect(try JSONCoding.encode([digest]) == "[\"\(digest.hex)\"]")
        #expect(
            try JSONCoding.decode([RestorePointID].self, from: Array(#"["vm@2026-11-26T03:00:00Z"]"#.utf8), what: "t")
                == [id])
        #expect(
            try JSONCoding.decode([ChunkDigest].self, from: Array("[\"\(digest.hex)\"]".utf8), what: "t") == [digest])
        #expect(throws: CairnError.self) {
            try JSONCoding.decode([ChunkDigest].self, from: Array(#"["abc"]"#.utf8), what: "t")
        }
    }
}
