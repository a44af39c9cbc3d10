"""The regex sentence splitter on hand-written cases."""
from alum.tools.sentence_split import split_sentences


def test_basic_and_punctuation():
    assert split_sentences("One here. Two here! Three? Four.") == ["One here.", "Two here!", "Three?", "Four."]


def test_quotes_and_brackets_stay_with_their_sentence():
    assert split_sentences('He said "Go home." Then he left. (It rained.) Next.') == [
        'He said "Go home."', "Then he left.", "(It rained.)", "Next."]


def test_abbreviations_initials_and_decimals_do_not_split():
    text = "Mr. Smith met Dr. J. R. Tolkien at 3.5 p.m. in the U.S. on Monday. It was e.g. fine."
    assert split_sentences(text) == ["Mr. Smith met Dr. J. R. Tolkien at 3.5 p.m. in the U.S. on Monday.",
                                     "It was e.g. fine."]


def test_lowercase_after_period_does_not_split_and_lines_do():
    assert split_sentences("see fig. below for details. and so on\nNew line here") == [
        "see fig. below for details. and so on", "New line here"]


def test_nothing_lost_but_whitespace():
    text = "  A b.  C d!\n\n E f? g  "
    assert "".join(split_sentences(text)).replace(" ", "") == text.replace(" ", "").replace("\n", "")
    assert split_sentences("   \n ") == []
