"""Language tags in content: what the Nu HTML Checker takes in a ``lang`` attribute.

The checker looks tags up in the IANA registry; we keep the part we can vouch for
without shipping it: an ISO 639-1 language (``pt-BR`` is kept as ``pt``)."""

from __future__ import annotations

ISO_639_1 = frozenset(
    """aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu
    cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi
    ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks
    ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl
    nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl
    sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve
    vi vo wa wo xh yi yo za zh zu""".split()
)


def valid_lang(value: str) -> str | None:
    """``value``'s ISO 639-1 language in lower case, or ``None`` when it has none;
    ``""`` (unknown, as HTML allows) stays ``""``."""
    if not value.strip():
        return ""
    primary = value.strip().split("-", 1)[0].lower()
    return primary if primary in ISO_639_1 else None
