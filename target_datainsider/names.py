"""DataInsider's rule for database, table and column names, shared by the target (which
names its tables and columns as the server will store them) and the emulator (which stores
them so). Its own module so the emulator imports it without the target's singer-sdk."""

from __future__ import annotations

import re

_VIETNAMESE = str.maketrans(
    "àáạảãâầấậẩẫăằắặẳẵèéẹẻẽêềếệểễìíịỉĩòóọỏõôồốộổỗơờớợởỡùúụủũưừứựửữỳýỵỷỹđ"
    "ÀÁẠẢÃÂẤẦẨẪẬĂẮẰẲẴẶÉÈẺẼẸÊẾỀỂỄỆÍÌỈĨỊÓÒỎÕỌÔỐỒỔỖỘƠỚỜỞỠỢÚÙỦŨỤƯỨỪỬỮỰÝỲỶỸỴĐ",
    "aaaaaaaaaaaaaaaaaeeeeeeeeeeeiiiiiooooooooooooooooouuuuuuuuuuuyyyyyd"
    "AAAAAAAAAAAAAAAAAEEEEEEEEEEEIIIIIOOOOOOOOOOOOOOOOOUUUUUUUUUUUYYYYYD",
)
_NOT_ALNUM = re.compile(r"[^a-zA-Z0-9]+")


def normalize_name(name: str) -> str:
    """DataInsider's own rule (`ClickHouseUtils.normalizeString`, server HEAD): Vietnamese
    letters lose their marks (only those: `ü` is not folded), the text is trimmed, every run
    of characters other than ASCII letters and digits becomes one `_`."""
    trimmed = name.translate(_VIETNAMESE).strip("".join(map(chr, range(33))))
    return re.sub("_+", "_", _NOT_ALNUM.sub("_", trimmed))
