"""The fault spec and seeded chaos (pure), and the encoder that injects faults, with
vectors kept as data (``tests/vectors/fault_specs.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenstream.dialects.openai_chat import OpenAIChunkFormat
from tokenstream.engine.clock import FakeClock
from tokenstream.engine.faults import ChaosSequences, FaultSpecError, parse_chaos, parse_faults
from tokenstream.engine.injection import FaultReached, FaultyEncoder, StallGate, malformed
from tokenstream.engine.tokenizer import Piece

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "fault_specs.json").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda case: case["spec"])
def test_a_valid_spec_parses_and_describes_itself(case: dict[str, object]) -> None:
    faults = parse_faults(str(case["spec"]))
    assert [str(fault) for fault in faults] == case["faults"]
    assert parse_faults(",".join(str(fault) for fault in faults)) == faults  # round trip


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda case: case["spec"] or "empty")
def test_an_invalid_spec_says_why(case: dict[str, str]) -> None:
    with pytest.raises(FaultSpecError, match=case["reason"]):
        parse_faults(case["spec"])


@pytest.mark.parametrize("case", VECTORS["chaos_valid"], ids=lambda case: case["spec"])
def test_a_chaos_spec_parses(case: dict[str, str]) -> None:
    assert str(parse_chaos(case["spec"])) == case["chaos"]


@pytest.mark.parametrize("case", VECTORS["chaos_invalid"], ids=lambda case: case["spec"])
def test_an_invalid_chaos_spec_says_why(case: dict[str, str]) -> None:
    with pytest.raises(FaultSpecError, match=case["reason"]):
        parse_chaos(case["spec"])


def test_seeded_chaos_gives_the_same_faults_in_two_runs() -> None:
    chaos = parse_chaos("seed=42,error=0.3,truncate=0.3,stall=0.3,duplicate=0.2")
    first, second = ChaosSequences(), ChaosSequences()
    run_one = [first.draw(chaos) for _ in range(50)]
    run_two = [second.draw(chaos) for _ in range(50)]
    assert run_one == run_two
    assert sum(bool(faults) for faults in run_one) > 10  # it does inject
    assert len({faults for faults in run_one}) > 5  # and not the same every time
    other = ChaosSequences()
    assert [other.draw(parse_chaos("seed=43,error=0.3,truncate=0.3,stall=0.3,duplicate=0.2"))
            for _ in range(50)] != run_one


def test_a_kinds_chance_leaves_the_other_kinds_draws_alone() -> None:
    """Each kind takes its draws whether it fires or not: turning one kind off does not
    move another's faults."""
    both = parse_chaos("seed=5,error=0.5,truncate=0.5")
    alone = parse_chaos("seed=5,error=0,truncate=0.5")
    for number in range(40):
        truncates = [f for f in both.draw(number) if f.kind == "truncate"]
        assert truncates == [f for f in alone.draw(number) if f.kind == "truncate"]


def _encoder(spec: str) -> FaultyEncoder:
    inner = OpenAIChunkFormat(model="m", include_usage=False, completion_id="c", created=1)

    class Sink:
        batch_bytes = 1 << 16
        last_write = 0.0

        def write_nowait(self, data: bytes, now: float | None = None) -> bool:
            return True

        async def send(self, data: bytes) -> None:
            pass

    return FaultyEncoder(inner, parse_faults(spec), StallGate(Sink(), FakeClock()))


def test_duplicate_and_malformed_change_the_event_that_reaches_the_count() -> None:
    plain = _encoder("stall:1s@99")
    faulty = _encoder("duplicate@2,malformed@3")
    pieces = [Piece("a"), Piece("b"), Piece("c"), Piece("d")]
    expected = [plain.piece(piece) for piece in pieces]
    got = [faulty.piece(piece) for piece in pieces]
    assert got[0] == expected[0] and got[3] == expected[3]
    assert got[1] == expected[1] * 2
    assert got[2] == malformed(expected[2])
    data = got[2].split(b"data: ")[-1].strip()
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)


def test_an_ending_fault_carries_the_event_that_reached_it() -> None:
    encoder = _encoder("truncate@3")
    encoder.piece(Piece("a"))
    encoder.piece(Piece("b", 1))
    with pytest.raises(FaultReached) as caught:
        encoder.piece(Piece("cd", 2))
    assert caught.value.fault.kind == "truncate"
    assert b'"content":"cd"' in caught.value.pending
    assert encoder.tokens == 4


async def test_a_stall_holds_what_follows_its_token_even_unpaced() -> None:
    """The event that reaches the stall goes out; everything after it, due at once on an
    unpaced profile, waits for the stall's end, and no batch spans it."""
    from tokenstream.engine.accounting import StreamStats
    from tokenstream.engine.pacer import PacingProfile
    from tokenstream.engine.playout import Playout
    from tokenstream.engine.reply import ReplyProgress, scheduled_reply
    from tokenstream.engine.tokenizer import Tokenizer, load_encoding

    clock = FakeClock()

    class Recorder:
        batch_bytes = 1 << 16

        def __init__(self) -> None:
            self.writes: list[tuple[float, bytes]] = []
            self.last_write = 0.0

        def write_nowait(self, data: bytes, now: float | None = None) -> bool:
            self.writes.append((clock.now(), data))
            return True

        async def send(self, data: bytes) -> None:
            self.writes.append((clock.now(), data))

    recorder = Recorder()
    gate = StallGate(recorder, clock)
    inner = OpenAIChunkFormat(model="m", include_usage=False, completion_id="c", created=1)
    encoder = FaultyEncoder(inner, parse_faults("stall:2s@3"), gate)
    events = scheduled_reply(
        " one two three four five six", tokenizer=Tokenizer(load_encoding()),
        profile=PacingProfile(tokens_per_second=None), start=0.0, max_tokens=None,
        progress=ReplyProgress(),
    )
    await Playout(gate, clock, events, encoder, StreamStats()).run()
    texts = [(time, data.decode().count('"content":"')) for time, data in recorder.writes]
    before = sum(count for time, count in texts if time < 2.0)
    after = sum(count for time, count in texts if time >= 2.0)
    assert before == 3 + 1  # the role chunk's empty content, then three tokens
    assert after == 3
