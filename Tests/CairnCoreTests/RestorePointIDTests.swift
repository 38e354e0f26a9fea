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

/// Times as people type them, and the one parser of restore point selectors.
@Suite struct TimestampParsingTests {
    static let moment = Timestamp(year: 2026, month: 12, day: 1, hour: 13, minute: 33, second: 50)

    @Test(arguments: [
        "2026-12-01T13:33:50Z", "2026-12-01T14:33:50+01:00", "2026-12-01T14:33:50+0100", "2026-12-01T08:33:50-05",
        "2026-12-01T13:33:50.250Z", "2026-12-01T14:33:50.999999+01:00", "2026-12-01 13:33:50", "2026-12-01T13:33:50",
        "2026-12-01t13:33:50z",
    ])
    func zonesAndFractions(_ text: String) throws {
        #expect(Timestamp(parsing: text) == Self.moment, "\(text)")
    }

    @Test(arguments: [
        "2026-12-01T14:33:50+1", "2026-12-01T14:33:50+24:00", "2026-12-01T14:33:50+01:60", "2026-12-01T14:33:50.",
        "2026-12-01T14:33:50.5x", "2026-12-01T14:33:50+01:00Z", "2026-13-01", "yesterday",
    ])
    func malformedTimesAreRefused(_ text: String) {
        #expect(Timestamp(parsing: text) == nil, "\(text)")
        #expect(Timestamp(parsing: text, zoneless: .local) == nil, "\(text)")
    }

    @Test func aZoneIsNeverReadAsLocalTime() {
        #expect(Timestamp(parsing: "2026-12-01T14:33:50+01:00", zoneless: .local) == Self.moment)
        #expect(Timestamp(parsing: "2026-12-01T13:33:50Z", zoneless: .local) == Self.moment)
    }

    @Test func selectorsParseOnce() throws {
        let id = try #require(RestorePointID(parsing: "vm@2026-12-01T13:33:50Z"))
        #expect(try RestorePointSelector(parsing: "vm@2026-12-01T13:33:50Z") == .id(id))
        // An id without a zone is UTC, as ids are, whatever TZ says.
        #expect(try RestorePointSelector(parsing: "vm@2026-12-01T13:33:50") == .id(id))
        #expect(try RestorePointSelector(parsing: "vm@latest") == .latest(group: "vm"))
        #expect(
            try RestorePointSelector(group: "vm", at: "2026-12-01T14:33:50+01:00")
                == .atOrBefore(group: "vm", time: Self.moment))
        for bad in ["vm", "../x@latest", "vm@soon"] {
            #expect(throws: CairnError.self) { try RestorePointSelector(parsing: bad) }
        }
        #expect(throws: CairnError.self) { try RestorePointSelector(group: "vm", at: "soon") }
    }

    @Test func selectorsPickTheNewestTheyAdmit() throws {
        let ids = [0, 60, 120].map { RestorePointID(group: "vm", time: Timestamp(seconds: Self.moment.seconds + $0)) }
        let other = RestorePointID(group: "db", time: Timestamp(seconds: Self.moment.seconds + 600))
        let all = ids + [other]
        #expect(RestorePointSelector.latest(group: "vm").select(from: all) == ids[2])
        #expect(
            RestorePointSelector.atOrBefore(group: "vm", time: Timestamp(seconds: Self.moment.seconds + 119))
                .select(from: all) == ids[1])
        #expect(RestorePointSelector.atOrBefore(group: "vm", time: Timestamp(seconds: 0)).select(from: all) == nil)
        #expect(RestorePointSelector.id(ids[0]).select(from: all) == ids[0])
        #expect(RestorePointSelector.latest(group: "nope").select(from: all) == nil)
    }

    @Test func holderNotesReadAsPIDAndCommand() {
        #expect(
            LockHolder.parse(note: "cairn gc (pid 4242, started 2026-11-26T03:00:00Z)")
                == "PID 4242 (cairn gc, since 2026-11-26T03:00:00Z)")
        #expect(LockHolder.parse(note: "") == nil)
        #expect(LockHolder.parse(note: "something else") == "something else")
    }
}
