/// A unified diff (`diff -u` style hunks, three lines of context) of two texts.
///
/// Built on the standard library's `CollectionDifference` (a Myers diff), so there is no diff
/// algorithm of our own to trust; this only lays its result out as hunks.
enum UnifiedDiff {
    static let context = 3

    private enum Line {
        case same(String)
        case removed(String)
        case added(String)
    }

    /// The hunks turning `old` into `new`, headed `--- OLDNAME` / `+++ NEWNAME`; empty when equal.
    static func make(old: String, new: String, oldName: String, newName: String) -> String {
        let a = lines(old)
        let b = lines(new)
        guard a != b else { return "" }
        let difference = b.difference(from: a)
        var removed = Set<Int>()
        var inserted = Set<Int>()
        for change in difference {
            switch change {
            case .remove(let offset, _, _): removed.insert(offset)
            case .insert(let offset, _, _): inserted.insert(offset)
            }
        }
        // The edit script, each line with its 1-based position in old and new.
        var script: [(line: Line, i: Int, j: Int)] = []
        var i = 0
        var j = 0
        while i < a.count || j < b.count {
            if i < a.count && removed.contains(i) {
                script.append((.removed(a[i]), i, j))
                i += 1
            } else if j < b.count && inserted.contains(j) {
                script.append((.added(b[j]), i, j))
                j += 1
            } else {
                script.append((.same(a[i]), i, j))
                i += 1
                j += 1
            }
        }
        var out = "--- \(oldName)\n+++ \(newName)\n"
        var k = 0
        while k < script.count {
            guard case .same = script[k].line else {
                // A hunk: back up for context, run until `context * 2` unchanged lines in a row.
                let start = max(0, k - context)
                var end = k
                var quiet = 0  // unchanged lines just before `end`
                while end < script.count {
                    if case .same = script[end].line { quiet += 1 } else { quiet = 0 }
                    if quiet > context * 2 {
                        quiet -= 1  // script[end] itself is not in the hunk
                        break
                    }
                    end += 1
                }
                end -= max(0, quiet - context)
                let hunk = script[start..<end]
                let oldCount = hunk.filter { if case .added = $0.line { return false } else { return true } }.count
                let newCount = hunk.filter { if case .removed = $0.line { return false } else { return true } }.count
                let oldStart = oldCount == 0 ? script[start].i : script[start].i + 1
                let newStart = newCount == 0 ? script[start].j : script[start].j + 1
                out += "@@ -\(oldStart),\(oldCount) +\(newStart),\(newCount) @@\n"
                for entry in hunk {
                    switch entry.line {
                    case .same(let text): out += " \(text)\n"
                    case .removed(let text): out += "-\(text)\n"
                    case .added(let text): out += "+\(text)\n"
                    }
                }
                k = end
                continue
            }
            k += 1
        }
        return out
    }

    private static func lines(_ text: String) -> [String] {
        var parts = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if parts.last == "" { parts.removeLast() }
        return parts
    }
}
