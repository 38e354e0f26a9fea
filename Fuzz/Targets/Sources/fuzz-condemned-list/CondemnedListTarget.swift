import CairnCore
import FuzzSupport

/// gc's condemned lists (`gc/condemned-T-TAG.json`, docs/FORMAT.md "Condemned lists"): every
/// process that opens a shared repository reads them to know which packs count as absent, and
/// gc's second phase acts on them. Any host with write access can leave one, so they are
/// untrusted: a list that does not parse must be ignored (and removed by gc), and one that
/// parses must never cost a restore point a chunk, whatever packs it names and whatever its times.
///
/// Input: one options byte, then the list's bytes. Options: bit 0 replaces every `@@` in the
/// list by the hex id of the one pack a restore point needs, so mutations reach the revive path;
/// bit 1 writes the list a second time under another name. The repository (leases, as on an
/// object store: `SharedDirectoryStorage`) holds one restore point of a 64 KiB disk; it is
/// opened, gc runs with no grace period, and then verify must find the restore point intact
/// (every chunk read back and proved by its digest), else the harness traps (a finding).
@main
enum CondemnedListTarget {
    static func main() {
        let scratch = Scratch("condemned-list")
        let repository = FuzzRepository(in: scratch)
        var disk = [UInt8](repeating: 0, count: 64 << 10)
        for i in 0..<(40 << 10) { disk[i] = UInt8(truncatingIfNeeded: i &* 31 &+ 7) }
        scratch.write(disk, to: "disk.raw")
        let livePack: String
        do {
            let repo = try Repository(storage: SharedDirectoryStorage(root: repository.path))
            _ = try BackupJob(
                repository: repo, group: "vm1", sources: [BackupSource(path: "\(scratch.path)/disk.raw")]
            ).run()
            guard let pack = try repo.storage.list(prefix: "packs/").first(where: { $0.hasSuffix(".pack") }) else {
                fatalError("the fuzz backup wrote no pack")
            }
            livePack = String(pack.split(separator: "/").last!.dropLast(".pack".count))
        } catch {
            fatalError("cannot set up the fuzz repository: \(error)")
        }
        FuzzDriver.run { buffer in
            var input = FuzzInput(buffer)
            let options = input.byte()
            var list = input.rest()
            if options & 1 != 0 { list = replacing(Array("@@".utf8), with: Array(livePack.utf8), in: list) }
            scratch.remove("repo/gc")
            scratch.write(list, to: "repo/gc/condemned-1000000000-00000000.json")
            if options & 2 != 0 { scratch.write(list, to: "repo/gc/condemned-1000000001-00000001.json") }
            do {
                let repo = try Repository(storage: SharedDirectoryStorage(root: repository.path))
                let gc = GarbageCollector(repository: repo)
                gc.grace = 0
                _ = try? gc.run()
                let reopened = try Repository(storage: SharedDirectoryStorage(root: repository.path))
                let report = try RepositoryVerifier(repository: reopened).run()
                guard report.intact else { fatalError("a condemned list cost a restore point: \(report)") }
            } catch {
                fatalError("a condemned list broke the repository: \(error)")
            }
        }
    }

    static func replacing(_ token: [UInt8], with value: [UInt8], in bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if i + token.count <= bytes.count, Array(bytes[i..<i + token.count]) == token {
                out += value
                i += token.count
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return out
    }
}
