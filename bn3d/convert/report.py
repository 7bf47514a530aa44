"""What a conversion did, one line per fact: the report.

Every line is ``KIND SUBJECT: TEXT``, the kind padded to 8 characters, so that
``grep '^default'`` finds every documented default applied. The kinds, in the
order a report lists them:

============  ==============================================================
``convert``   the input and output files, their frameworks and formats
``assume``    the settings assumed for every layer (a checkpoint stores no
              ``eps`` nor ``momentum``)
``layer``     a converted BatchNorm layer: its tensors, before and after
``build``     the code that builds the equivalent layer in the target framework
``default``   what the checkpoint cannot say, handled by a documented default
``marked``    what was done because the user marked the layer
``policy``    what was done by a policy the user chose for a setting with no
              exact equivalent
``passed``    a tensor passed through unchanged, with its name
``excluded``  a tensor left out because the user excluded it
``warning``   something that may not be what the user wants
``wrote``     the output file
``check``     the proof by replay of one layer (its line is marked failed if
              the layer's largest difference exceeds the tolerance)
============  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KINDS", "Line", "Note", "Report"]

KINDS = ("convert", "assume", "layer", "build", "default", "marked", "policy", "passed",
         "excluded", "warning", "wrote", "check")
#: The kinds of :class:`Note`: what a layer's conversion chose, and why.
NOTE_KINDS = ("default", "marked", "policy")


@dataclass(frozen=True)
class Note:
    """One choice made while converting a layer's settings or state.

    Attributes
    ----------
    kind : str
        ``"default"`` (what the source cannot say, handled by a documented
        default), ``"marked"`` (done because the user marked the layer) or
        ``"policy"`` (a policy the user chose).
    text : str

    Examples
    --------
    >>> Note("default", "num_batches_tracked (7) dropped")
    Note(kind='default', text='num_batches_tracked (7) dropped')
    """

    kind: str
    text: str

    def __post_init__(self) -> None:
        if self.kind not in NOTE_KINDS:
            raise ValueError(f"a note's kind is one of {', '.join(NOTE_KINDS)}, not {self.kind!r}")


@dataclass(frozen=True)
class Line:
    """One line of a report.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    subject : str
        The layer, tensor or file the line is about.
    text : str
    failed : bool
        For a ``check`` line: the layer exceeded the tolerance or could not be
        replayed.

    Examples
    --------
    >>> print(Line("default", "layer1.bn", "num_batches_tracked (7) dropped"))
    default  layer1.bn: num_batches_tracked (7) dropped
    """

    kind: str
    subject: str
    text: str
    failed: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"a report line's kind is one of {', '.join(KINDS)}, "
                             f"not {self.kind!r}")

    def __str__(self) -> str:
        return f"{self.kind:<8} {self.subject or '(top level)'}: {self.text}"


@dataclass(frozen=True)
class Report:
    """The lines of a conversion's report, in order.

    Attributes
    ----------
    lines : tuple of Line

    Examples
    --------
    >>> report = Report((Line("layer", "bn", "converted"),
    ...                  Line("check", "bn", "FAIL: differs by 0.5", failed=True)))
    >>> print(report)
    layer    bn: converted
    check    bn: FAIL: differs by 0.5
    >>> report.failed, [line.text for line in report.of("layer")]
    (True, ['converted'])
    """

    lines: tuple[Line, ...]

    def __str__(self) -> str:
        return "\n".join(map(str, self.lines))

    def of(self, kind: str) -> list[Line]:
        """The lines of one kind, in order."""
        return [line for line in self.lines if line.kind == kind]

    @property
    def failed(self) -> bool:
        """Whether a layer failed its check."""
        return any(line.failed for line in self.lines)
