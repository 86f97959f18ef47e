"""Text helpers shared by places, the tree and search: folding and slugs."""

import re
import unicodedata

_NON_WORD = re.compile(r"[^0-9a-z]+")
# Words a capitalised source writes as they should stay: "73A", "II", "XIV".
_KEEP_AS_GIVEN = re.compile(r"^(.*[0-9].*|(?=[IVX]{2,}$)X{0,3}(IX|IV|V?I{0,3}))$")


def fold(text: str) -> str:
    """Lower-case `text` and strip macrons and other accents ("Ōpāwa" -> "opawa")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def search_key(text: str) -> str:
    """Folded words separated by single spaces, for word-prefix search.

    Apostrophes are dropped so "O'Sullivans" is found by typing "osullivans".
    """
    folded = fold(text).replace("'", "").replace("’", "")
    return " ".join(_NON_WORD.sub(" ", folded).split())


# Street-type abbreviations residents type ("opawa rd"), each with the word names spell
# out. One that already starts its word ("ave", "st", "pl", "cres") needs no entry.
STREET_ABBREVIATIONS = {
    "rd": "road",
    "ln": "lane",
    "tce": "terrace",
    "hwy": "highway",
    "pde": "parade",
    "ct": "court",
    "sq": "square",
    "mt": "mount",
    "blvd": "boulevard",
    "cct": "circuit",
    "gdns": "gardens",
    "hts": "heights",
    "pkwy": "parkway",
}


def slugify(text: str) -> str:
    """URL-safe id from a name: "St Albans East" -> "st-albans-east"."""
    return search_key(text).replace(" ", "-")


def title_case(text: str) -> str:
    """Title case for names that a source gives in capitals ("MCLEANS ISLAND ROAD").

    str.title() would turn "SHIRLEY'S" into "Shirley'S"; this capitalises each word
    after a space or hyphen only, and the letter after a Scottish/Irish "Mc"/"O'".
    Words with digits and roman numerals keep the source's form ("State Highway 73A",
    "Queen Elizabeth II Drive").
    """

    def word(w: str) -> str:
        if _KEEP_AS_GIVEN.match(w):
            return w
        w = w.lower()
        if len(w) > 2 and w.startswith("mc"):
            return "Mc" + w[2].upper() + w[3:]
        if len(w) > 2 and w[:2] in ("o'", "o’"):
            return "O" + w[1] + w[2].upper() + w[3:]
        return w[:1].upper() + w[1:]

    return " ".join("-".join(word(part) for part in chunk.split("-")) for chunk in text.split())
