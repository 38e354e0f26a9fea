import Testing

@testable import CairnCore

/// New restore point ids: unique and ordered within a group, never ahead of the clock.
@Suite struct RestorePointIDTests {
    @Test func anIdInThisSecondWaitsForTheNext() throws {
        let previous = RestorePointID(group: "vm", time: Timestamp.now())
        let next = try RestorePointID.next(in: "vm", after: previous)
        #expect(next.time > previous.time)
        #expect(next.time <= Timestamp.now())
        #expect(next.group == "vm")
    }

    @Test func anOlderIdDoesNotWait() throws {
        let before = Timestamp.now()
        let next = try RestorePointID.next(in: "vm", after: RestorePointID(group: "vm", time: Timestamp(seconds: 0)))
        #expect(next.time >= before && next.time <= Timestamp.now())
    }

    @Test func anIdFarAheadOfTheClockIsRefused() {
        let ahead = RestorePointID(group: "vm", time: Timestamp(seconds: Timestamp.now().seconds + 3600))
        #expect {
            _ = try RestorePointID.next(in: "vm", after: ahead)
        } throws: { error in
            (error as? CairnError)?.code == .io && "\(error)".contains("behind the newest restore point")
        }
    }

    @Test func idsToTheSecondStillParseAndSort() throws {
        let a = try #require(RestorePointID(parsing: "vm@2026-11-26T03:00:00Z"))
        let b = try #require(RestorePointID(parsing: "vm@2026-11-26T03:00:01Z"))
        #expect(a < b)
        #expect(a.description == "vm@2026-11-26T03:00:00Z")
    }
}
