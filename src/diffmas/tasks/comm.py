"""Communication tasks: the information is split across the agents of the chain, so only the channel brings it
to the Solver.

Every item carries `views`, one string per agent in chain order (the Solver last, "" for an agent that holds
nothing); `question` is shared. A single agent that reads every view (the skyline) can answer; the Solver with
only its own view is at chance. Answers are one word, name or number out of a closed set listed in the
question and in `meta["options"]`, so `Task.chance_rate` is the chance rate; answers are drawn so that the
majority class of a split stays near chance.

The four tasks (`get_task(name, agents=..., seed=...)`):

- `secret`: agent 1 holds a word (or number); the Solver must name it.
- `relay`: object holdings and swaps, split across the upstream agents; who holds an object at the end.
- `split_hop`: a chain of "X's mentor is Y" facts, one hop per upstream agent, plus decoy chains.
- `tipsheet`: a hidden profile: traits of flats spread so that no single view says which flat is best.

Everything is generated offline from `random.Random` seeded with a stable string (never `hash()`), so the
same arguments give the same items in every process. `train` and `test` come from separate streams and
test items whose content (question, views, answer) occurs in train are redrawn; test items are also
distinct among themselves, train items may repeat. Names are invented (two tokens each for SmolLM2) so that
no world knowledge helps; views and questions are kept short for small models.
"""

from __future__ import annotations

import itertools
import random
import re
from abc import abstractmethod
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from diffmas.tasks.base import Item, Task
from diffmas.tasks.registry import register_task

SOURCE = "procedural (diffmas.tasks.comm)"

# Invented names (none a prefix of another, none a common word), two SmolLM2 tokens each after a space.
NAMES: tuple[str, ...] = (
    "Brell", "Quon", "Tavi", "Dask", "Vorn", "Plim", "Greb", "Mosk", "Zint", "Hulo", "Narv", "Lisk", "Pruv",
    "Sarn", "Thov", "Vesh", "Zabe", "Isk", "Klev", "Lorm", "Nusk", "Olv", "Quaz", "Stov", "Trub", "Uvo",
    "Vusk", "Wopp", "Yenn", "Drob", "Gavi", "Heln", "Jask", "Lemb", "Morv", "Relv", "Sovi", "Vimb", "Yub",
    "Zunn", "Brov", "Dreb", "Frov", "Kreb", "Marn", "Prell", "Quim", "Ferb", "Jeld", "Lusk", "Mev", "Pavi",
    "Rask", "Vabo", "Yask", "Brask", "Drev", "Grov", "Plen", "Trask", "Vorm", "Darv", "Pilk", "Resk", "Vask",
)  # fmt: skip

# Secret words: common short nouns, one SmolLM2 token each after a space.
WORDS: tuple[str, ...] = (
    "maple", "river", "cobalt", "stone", "grape", "tiger", "salt", "apple", "bread", "candle", "cloud",
    "coral", "desk", "drum", "eagle", "fern", "flute", "garden", "glass", "harbor", "honey", "island",
    "jacket", "kettle", "ladder", "lemon", "marble", "meadow", "mirror", "needle", "ocean", "olive",
    "pepper", "piano", "pillow", "planet", "pocket", "rabbit", "ribbon", "rocket", "saddle", "shadow",
    "silver", "spoon", "stamp", "sugar", "table", "thunder", "violin", "wagon", "walnut", "window",
    "winter", "wolf", "anchor", "basket", "bottle", "button", "camera", "carpet", "castle", "cherry",
    "copper", "cotton",
)  # fmt: skip
NUMBERS: tuple[str, ...] = tuple(str(n) for n in range(10, 100))

OBJECTS: tuple[str, ...] = (
    "ball", "key", "cup", "book", "hat", "pen", "box", "coin", "lamp", "ring", "bag", "map",
)  # fmt: skip

# Tipsheet traits as (good, bad) pairs: +1 for the first word, -1 for the second.
TRAITS: tuple[tuple[str, str], ...] = (
    ("quiet", "noisy"),
    ("cheap", "costly"),
    ("bright", "dark"),
    ("warm", "cold"),
    ("big", "small"),
)


def _int_arg(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """`value` as an int in [lo, hi] (None: unbounded), else a ValueError that names the argument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _listing(options: list[str] | tuple[str, ...]) -> str:
    return ", ".join(options)


def item_signature(item: Item) -> tuple[str, tuple[str, ...], str]:
    """What makes two items the same content (ids and meta aside): used to keep test apart from train."""
    return (item.question, tuple(item.views or ()), item.answer)


@dataclass(frozen=True)
class Draft:
    """One generated item before it gets its id and split."""

    question: str
    views: tuple[str, ...]
    answer: str
    options: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)


class CommTask(Task):
    """Shared machinery: argument checks, seeded `train`/`test` streams, test kept disjoint from train.

    Subclasses implement `draw(rng)`, one random item; `answer_word` says what the answer is ("word",
    "name", "number") in the format instruction.
    """

    answer_type = "text"
    source = SOURCE
    answer_word = "word"
    # Views that alone name the answer by design (the sender in `secret`); every other single view must not beat
    # chance (`single_view_rates`, checked on the test split in tests/tasks/test_comm_shortcuts.py).
    sufficient_views: tuple[int, ...] = ()

    def __init__(self, agents: int = 4, seed: int = 0, n_train: int = 5000, n_test: int = 500):
        self.agents = _int_arg("agents", agents, 2)
        self.seed = _int_arg("seed", seed)
        self.n_train = _int_arg("n_train", n_train, 0)
        self.n_test = _int_arg("n_test", n_test, 0)
        self.sizes = {"train": self.n_train, "test": self.n_test}
        self._items: dict[str, list[Item]] = {}

    @property
    def upstream(self) -> int:
        """Agents before the Solver (they hold the private information)."""
        return self.agents - 1

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    @property
    def format_instruction(self) -> str:
        return f"Answer with one {self.answer_word} in \\boxed{{}}."

    @abstractmethod
    def draw(self, rng: random.Random) -> Draft:
        """One random item (views with one entry per agent, the Solver's last)."""

    def load(self, split: str = "test") -> list[Item]:
        if split not in self.splits():
            raise ValueError(f"{self.name}: no split {split!r} (have train, test)")
        if split not in self._items:
            self._items[split] = self._generate(split)
        return list(self._items[split])

    def _generate(self, split: str) -> list[Item]:
        n = self.sizes[split]
        rng = random.Random(f"diffmas.comm/{self.name}/seed={self.seed}/{split}")
        # Test avoids every train item and repeats of itself; train is a plain stream (repeats allowed).
        seen = {item_signature(it) for it in self.load("train")} if split == "test" else None
        items: list[Item] = []
        misses = 0  # consecutive redraws: many in a row mean the item space is (nearly) exhausted
        while len(items) < n and misses < 10_000:
            d = self.draw(rng)
            assert len(d.views) == self.agents and d.answer in d.options
            if seen is not None:
                sig = (d.question, d.views, d.answer)
                if sig in seen:
                    misses += 1
                    continue
                seen.add(sig)
            misses = 0
            meta = {"targets": [d.answer], "options": list(d.options), "split": split, **d.meta}
            items.append(
                Item(
                    id=f"{self.name}-{split}-{len(items)}",
                    question=d.question,
                    answer=d.answer,
                    meta=meta,
                    views=d.views,
                )
            )
        if len(items) < n:
            raise RuntimeError(
                f"{self.name}: only {len(items)} distinct {split} items out of {n} requested; the item space "
                "is too small for these settings (raise the difficulty knobs or lower n_test)"
            )
        return items

    def _views(self, upstream_views: list[str]) -> tuple[str, ...]:
        """Upstream views padded with "" up to the Solver (which holds nothing in these tasks)."""
        views = list(upstream_views) + [""] * (self.agents - len(upstream_views))
        return tuple(views)


@register_task("secret")
class SecretTask(CommTask):
    """Agent 1 holds a secret word (or number); the Solver must name it.

    Views: agent 1 "The secret word is maple."; every other agent "". The question lists `options`
    candidates (2..32, default 8) drawn per item from a fixed pool of 64 words (`kind="word"`) or the
    numbers 10..99 (`kind="number"`); the secret is uniform among them. Chance rate 1/options (0.125 by
    default); the majority class is about 1/64 (1/90 for numbers) since the secret is uniform over the pool.
    Difficulty knob: `options`.
    """

    name = "secret"
    sufficient_views = (0,)

    def __init__(
        self,
        agents: int = 4,
        seed: int = 0,
        n_train: int = 5000,
        n_test: int = 500,
        options: int = 8,
        kind: str = "word",
    ):
        super().__init__(agents, seed, n_train, n_test)
        self.options = _int_arg("options", options, 2, 32)
        if kind not in ("word", "number"):
            raise ValueError(f"kind must be 'word' or 'number', got {kind!r}")
        self.kind = kind
        self.answer_word = kind
        self.pool = WORDS if kind == "word" else NUMBERS

    def draw(self, rng: random.Random) -> Draft:
        candidates = rng.sample(self.pool, self.options)
        secret = candidates[rng.randrange(self.options)]
        question = f"Agent 1 was told a secret {self.kind}. Which is it? Options: {_listing(candidates)}."
        view = f"The secret {self.kind} is {secret}."
        return Draft(question, self._views([view]), secret, tuple(candidates))


@register_task("relay")
class RelayTask(CommTask):
    """State tracking split across agents: who holds an object after everyone's swaps.

    `people` (>= 3, <= 12) invented people each hold one object. Agent 1's view states the initial holdings
    and then its own swaps ("Brell has the ball. Quon has the key. Tavi has the cup. Then Brell and Tavi
    swap."); every other upstream agent holds `swaps_per_agent` (>= 1, the difficulty knob) swaps of its own,
    in chain order; the Solver holds "". Question: "Who has the key at the end? Options: Brell, Quon, Tavi."

    Chance rate 1/people (1/3 by default); the majority class is near zero (people are drawn from a pool
    of 65 names) and options are listed in random order, so no position wins. The asked object ends with
    its initial holder in 1/people of the items (the object is picked to match a role drawn with that
    probability), so "the initial holder" is no shortcut either. A swap never repeats the one just before
    it (that would undo it), except when 20 such sequences cannot give the item's drawn role: e.g. 3 people
    and an even number of swaps, which without repeats always end in a 3-cycle, so an item that must end
    with the initial holder then has a swap undone.
    """

    name = "relay"
    answer_word = "name"

    def __init__(
        self,
        agents: int = 4,
        seed: int = 0,
        n_train: int = 5000,
        n_test: int = 500,
        people: int = 3,
        swaps_per_agent: int = 1,
    ):
        super().__init__(agents, seed, n_train, n_test)
        self.people = _int_arg("people", people, 3, len(OBJECTS))
        self.swaps_per_agent = _int_arg("swaps_per_agent", swaps_per_agent, 1)

    def _swaps(self, rng: random.Random, names: list[str], allow_repeat: bool) -> list[tuple[str, str]]:
        swaps: list[tuple[str, str]] = []
        while len(swaps) < self.upstream * self.swaps_per_agent:
            a, b = rng.sample(names, 2)
            if swaps and not allow_repeat and {a, b} == set(swaps[-1]):
                continue
            swaps.append((a, b))
        return swaps

    def draw(self, rng: random.Random) -> Draft:
        names = rng.sample(NAMES, self.people)
        objects = rng.sample(OBJECTS, self.people)
        initial = dict(zip(objects, names))
        want_stay = rng.random() < 1 / self.people
        for attempt in range(60):
            swaps = self._swaps(rng, names, allow_repeat=attempt >= 20)
            holds = {name: obj for obj, name in initial.items()}
            for a, b in swaps:
                holds[a], holds[b] = holds[b], holds[a]
            final = {obj: name for name, obj in holds.items()}
            eligible = [o for o in objects if (final[o] == initial[o]) == want_stay]
            if eligible:
                break
        else:  # pragma: no cover - with repeats allowed both roles are reachable for people >= 3
            raise RuntimeError("relay: could not draw a swap sequence")
        target = rng.choice(eligible)
        k = self.swaps_per_agent
        said = [
            " ".join(f"Then {a} and {b} swap." for a, b in swaps[j * k : (j + 1) * k])
            for j in range(self.upstream)
        ]
        holdings = " ".join(f"{initial[o]} has the {o}." for o in objects)
        said[0] = f"{holdings} {said[0]}"
        options = rng.sample(names, len(names))
        question = f"Who has the {target} at the end? Options: {_listing(options)}."
        meta = {"object": target, "initial_holder": initial[target]}
        return Draft(question, self._views(said), final[target], tuple(options), meta)


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


@register_task("split_hop")
class SplitHopTask(CommTask):
    """Multi-hop lookup with one hop per upstream agent.

    A chain of invented names n0 -> n1 -> ... of length agents-1: agent i holds "n_i's mentor is n_{i+1}."
    Each upstream view also holds the same hop of `distractors` (>= 1, default 3, the difficulty knob) decoy
    chains built the same way over other names, so every view has the same shape and no view alone tells which
    of its facts is on the real chain (agent 1 can tell from the start name in the question, but its targets
    are not the options). The Solver holds "". Question: "Start at n0 and follow mentor links `hops` times.
    Who do you reach? Options: ..."; `hops` defaults to agents-1 and must be in 1..agents-1 (fewer hops: the
    real chain goes on past the answer, so "follow to the end" is wrong).

    Options: the name every chain reaches after `hops` links (the real answer and one per decoy chain), in
    random order: distractors+1 options, 4 by default, so the chance rate is 1/4. The agent holding the last
    hop holds one fact for every option, so only the earlier agents' facts say which chain to follow: no
    single view beats chance (`single_view_rates`; the test split is checked in tests). An earlier version
    listed every chain name as an option, and picking one of the last agent's targets scored 50%. With
    hops=1 agent 1 alone holds the answer, as in `secret`. The majority class is near zero (names are drawn
    from a pool of 65).
    """

    name = "split_hop"
    answer_word = "name"

    def __init__(
        self,
        agents: int = 4,
        seed: int = 0,
        n_train: int = 5000,
        n_test: int = 500,
        hops: int | None = None,
        distractors: int = 3,
    ):
        super().__init__(agents, seed, n_train, n_test)
        self.hops = self.upstream if hops is None else _int_arg("hops", hops, 1, self.upstream)
        self.distractors = _int_arg("distractors", distractors, 1)
        self.sufficient_views = (0,) if self.hops == 1 else ()
        needed = (self.upstream + 1) * (self.distractors + 1)
        if needed > len(NAMES):
            raise ValueError(
                f"distractors={distractors} with agents={agents} needs {needed} names, only {len(NAMES)} exist"
            )

    def draw(self, rng: random.Random) -> Draft:
        length = self.upstream + 1
        names = rng.sample(NAMES, length * (self.distractors + 1))
        chains = [names[c * length : (c + 1) * length] for c in range(self.distractors + 1)]
        real = chains[0]
        said = []
        for i in range(self.upstream):
            facts = [f"{chain[i]}'s mentor is {chain[i + 1]}." for chain in chains]
            rng.shuffle(facts)
            said.append(" ".join(facts))
        options = [chain[self.hops] for chain in chains]
        rng.shuffle(options)
        question = (
            f"Start at {real[0]} and follow mentor links {_times(self.hops)}. Who do you reach? "
            f"Options: {_listing(options)}."
        )
        # what each upstream agent's hop reaches: the message it should pass on (`diffmas.realign.writer_messages`)
        meta = {"start": real[0], "chain": list(real), "messages": list(real[1:])}
        return Draft(question, self._views(said), real[self.hops], tuple(options), meta)


def _mentions(text: str, word: str) -> list[int]:
    """Start offsets of `word` in `text` as a whole word (so "Isk" is not found inside "Brask")."""
    return [m.start() for m in re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", text)]


def view_rules(item: Item) -> dict[str, list[str]]:
    """Surface rules that read one view (or the question alone), each as the options it guesses uniformly among.

    Per view `v<i>`: the options the view mentions, those it does not, the first / last / most often mentioned,
    and those it states as a fact's object ("... is X"); a rule with nothing to pick from guesses among all
    options. Question alone: the first and the last listed option. A channel test is only meaningful when every
    such rule stays at chance for the views the Solver cannot see alone."""
    options = list(item.meta["options"])
    rules: dict[str, list[str]] = {}
    for i, view in enumerate(item.views or ()):
        where = {o: _mentions(view, o) for o in options}
        named = [o for o in options if where[o]]
        most = max((len(where[o]) for o in named), default=0)
        picks = {
            "mentioned": named,
            "unmentioned": [o for o in options if not where[o]],
            "first": [min(named, key=lambda o: where[o][0])] if named else [],
            "last": [max(named, key=lambda o: where[o][-1])] if named else [],
            "most": [o for o in named if len(where[o]) == most],
            "object": [o for o in named if any(view[:p].endswith(" is ") for p in where[o])],
        }
        for rule, chosen in picks.items():
            rules[f"v{i}:{rule}"] = chosen or options
    listed = sorted(options, key=lambda o: (_mentions(item.question, o) or [len(item.question)])[-1])
    rules["question:first_listed"] = listed[:1]
    rules["question:last_listed"] = listed[-1:]
    return rules


def single_view_rates(items: list[Item], skip_views: tuple[int, ...] = ()) -> dict[str, float]:
    """Expected accuracy of every rule of `view_rules` on `items` (a rule guessing among k options, one of them
    right, scores 1/k), leaving out the views in `skip_views` (those sufficient by design)."""
    totals: dict[str, float] = {}
    for item in items:
        for rule, chosen in view_rules(item).items():
            view = rule.split(":")[0]
            if view.startswith("v") and int(view[1:]) in skip_views:
                continue
            totals[rule] = totals.get(rule, 0.0) + (1 / len(chosen) if item.answer in chosen else 0.0)
    return {rule: total / len(items) for rule, total in totals.items()} if items else {}


@cache
def _partitions(signs: tuple[int, ...]) -> tuple[tuple[int, tuple[tuple[int, ...], ...]], ...]:
    """Every way to group the views (positions of `signs`) into shared facts, with the score it gives.

    A block is one fact told to the views in it, so all its signs agree; the score counts each fact once.
    """

    def set_partitions(elems: list[int]) -> list[list[list[int]]]:
        if not elems:
            return [[]]
        first, rest = elems[0], elems[1:]
        out = []
        for part in set_partitions(rest):
            out.append([[first], *part])
            for k in range(len(part)):
                out.append(part[:k] + [[first, *part[k]]] + part[k + 1 :])
        return out

    plus = [j for j, s in enumerate(signs) if s > 0]
    minus = [j for j, s in enumerate(signs) if s < 0]
    result = []
    for p, m in itertools.product(set_partitions(plus), set_partitions(minus)):
        blocks = tuple(tuple(b) for b in p + m)
        result.append((len(p) - len(m), blocks))
    return tuple(result)


def _hi(p: int, u: int) -> int:
    """Best score of a flat with p good and u-p bad cues: goods all distinct facts, bads one shared fact."""
    return p - (1 if p < u else 0)


def _lo(p: int, u: int) -> int:
    """Worst score: goods one shared fact, bads all distinct."""
    return (1 if p > 0 else 0) - (u - p)


@cache
def _windows(u: int) -> tuple[tuple[int, ...], ...]:
    """Ranges of good-cue counts per flat for which ANY flat can be made the unique best by sharing alone.

    Drawing the cue signs from such a range, independently of which flat wins, is what makes one view
    carry no information about the winner. Ranges start at one good cue (no all-bad items).
    """
    out = []
    for p_lo in range(1, u + 1):
        window = tuple(p for p in range(p_lo, u + 1) if _hi(p_lo, u) > _lo(p, u))
        if window:
            out.append(window)
    return tuple(out)


@register_task("tipsheet")
class TipsheetTask(CommTask):
    """Hidden profile: which flat is best, when its good traits are spread over the agents.

    `options` (2..6, default 3, the difficulty knob) flats with invented names. Every upstream agent hears
    one trait of every flat ("Brell is quiet. Quon is costly. Tavi is warm."); a trait told to several agents
    is the same fact. A flat's score is +1 per good trait (quiet, cheap, bright, warm, big) and -1 per bad
    trait (noisy, costly, dark, cold, small), each distinct trait once; the best flat has the unique highest
    score over ALL views. The rule is in the format instruction. The Solver holds "". Question: "Which flat
    is best? Options: Brell, Quon, Tavi."

    Construction: the good/bad signs of each flat's cues are drawn first, from a range where any flat can be
    made the winner; then the winner is drawn uniformly and independently, and which cues are shared facts
    decides the scores (the winner's good traits tend to be distinct facts, the others' repeated ones).
    Since the signs do not depend on the winner and each cue's trait is uniform, ONE view is exactly
    uninformative: the best-looking flat of a single view is right at chance, 1/options, and so is any
    other rule that reads one view. So is adding up every view's cues without merging repeats: the winner
    is decided by which traits several agents share, so the channel has to say which traits were heard,
    not only how many. Chance rate 1/options (1/3 by default); the majority class is near zero (names
    from a pool of 65) and the winner's position in the options is uniform. With agents=2 the one
    upstream agent holds everything (the winner is its only flat with a good trait). At most 6 agents
    (a flat can have at most 5 distinct traits).
    """

    name = "tipsheet"
    answer_word = "name"

    def __init__(
        self,
        agents: int = 4,
        seed: int = 0,
        n_train: int = 5000,
        n_test: int = 500,
        options: int = 3,
    ):
        super().__init__(agents, seed, n_train, n_test)
        if self.agents > len(TRAITS) + 1:
            raise ValueError(f"agents must be at most {len(TRAITS) + 1} for tipsheet, got {agents}")
        self.options = _int_arg("options", options, 2, 6)

    @property
    def format_instruction(self) -> str:
        good = ", ".join(g for g, _ in TRAITS)
        bad = ", ".join(b for _, b in TRAITS)
        return (
            f"A flat scores +1 per good trait ({good}) and -1 per bad trait ({bad}); a trait told twice "
            "counts once. Answer with one name in \\boxed{}."
        )

    def _signs(self, rng: random.Random, winner: int) -> list[tuple[int, ...]]:
        u, n = self.upstream, self.options
        if u == 1:  # one view holds everything: the winner alone gets a good trait
            return [(1,) if f == winner else (-1,) for f in range(n)]
        window = rng.choice(_windows(u))
        columns = []
        for _ in range(n):
            p = rng.choice(window)
            signs = [1] * p + [-1] * (u - p)
            rng.shuffle(signs)
            columns.append(tuple(signs))
        return columns

    def draw(self, rng: random.Random) -> Draft:
        u, n = self.upstream, self.options
        flats = rng.sample(NAMES, n)
        winner = rng.randrange(n)
        columns = self._signs(rng, winner)
        parts = [_partitions(c) for c in columns]
        # The winner's grouping must beat the worst case of every other flat; the others then stay below it.
        floor = max(min(s for s, _ in parts[f]) for f in range(n) if f != winner)
        score, blocks_w = rng.choice([pt for pt in parts[winner] if pt[0] > floor])
        chosen = {winner: blocks_w}
        for f in range(n):
            if f != winner:
                chosen[f] = rng.choice([pt for pt in parts[f] if pt[0] < score])[1]
        cues: list[list[str]] = [[] for _ in range(u)]
        for f in range(n):
            blocks = chosen[f]
            traits = rng.sample(range(len(TRAITS)), len(blocks))
            for block, t in zip(blocks, traits):
                word = TRAITS[t][0] if columns[f][block[0]] > 0 else TRAITS[t][1]
                for j in block:
                    cues[j].append(f"{flats[f]} is {word}.")
        for view in cues:
            rng.shuffle(view)
        options = rng.sample(flats, n)
        question = f"Which flat is best? Options: {_listing(options)}."
        return Draft(question, self._views([" ".join(c) for c in cues]), flats[winner], tuple(options))


__all__ = [
    "NAMES",
    "OBJECTS",
    "SOURCE",
    "TRAITS",
    "WORDS",
    "CommTask",
    "Draft",
    "RelayTask",
    "SecretTask",
    "SplitHopTask",
    "TipsheetTask",
    "item_signature",
    "single_view_rates",
    "view_rules",
]
