"""Rebuild the shipped sample corpus from Debian's `bible-kjv-text` package.

    apt-get install -y bible-kjv-text      # the `bible` reader comes with it
    python -m alum.data.sample._build

The King James Version (1611) is in the public domain (see the package's
copyright file). One document per chapter, verses grouped four to a
paragraph line, as WikiExtractor puts one paragraph per line. Writes:

- wiki/AA/wiki_00, wiki_01: WikiExtractor --json output (id, url, title, text)
- openwebtext/openwebtext.tar: an outer tar of two `.xz` subset archives,
  each a tar.xz of `NNNNNNN-<hex>.txt` documents, as in OpenWebText
- kjv_ruth.txt: one book as plain text, blank lines between documents
"""
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile

BOOKS = ("Ruth", "Esther", "Jonah", "Ecclesiastes", "Mark", "James", "Proverbs")
DOCS_PER_WIKI_FILE = 60
VERSES_PER_PARAGRAPH = 4
HERE = os.path.dirname(os.path.abspath(__file__))
_VERSE = re.compile(r"^\S+?(\d+):(\d+) (.*)$")


def chapters(book):
    """[(title, text)] for every chapter of `book`."""
    out = subprocess.run(["bible", "-f", "-l", "100000", f"{book}1:1-199:999"],
                         capture_output=True, text=True, check=True).stdout
    by_chapter = {}
    for line in out.splitlines():
        match = _VERSE.match(line.strip())
        if match:
            by_chapter.setdefault(int(match.group(1)), []).append(match.group(3).strip())
    docs = []
    for number, verses in sorted(by_chapter.items()):
        paragraphs = [" ".join(verses[i:i + VERSES_PER_PARAGRAPH])
                      for i in range(0, len(verses), VERSES_PER_PARAGRAPH)]
        docs.append((f"{book} {number}", "\n".join(paragraphs)))
    return docs


def write_wiki(docs):
    for i in range(0, len(docs), DOCS_PER_WIKI_FILE):
        path = os.path.join(HERE, "wiki", "AA", f"wiki_{i // DOCS_PER_WIKI_FILE:02d}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for j, (title, text) in enumerate(docs[i:i + DOCS_PER_WIKI_FILE], start=i + 1):
                url = "https://www.gutenberg.org/ebooks/10#" + title.replace(" ", "_")
                f.write(json.dumps({"id": str(j), "revid": "", "url": url, "title": title,
                                    "text": text}) + "\n")


def _tar_add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed: reproducible bytes
    tar.addfile(info, io.BytesIO(data))


def write_openwebtext(docs):
    half = (len(docs) + 1) // 2
    subsets = [("urlsf_subset00-1_data", docs[:half]), ("urlsf_subset00-2_data", docs[half:])]
    os.makedirs(os.path.join(HERE, "openwebtext"), exist_ok=True)
    with tarfile.open(os.path.join(HERE, "openwebtext", "openwebtext.tar"), "w",
                      format=tarfile.USTAR_FORMAT) as outer:
        number = 0
        for subset, subset_docs in subsets:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:xz", format=tarfile.USTAR_FORMAT) as inner:
                for _, text in subset_docs:
                    data = text.encode("utf-8")
                    digest = hashlib.md5(data).hexdigest()
                    _tar_add(inner, f"{number:07d}-{digest}.txt", data)
                    number += 1
            _tar_add(outer, f"openwebtext/{subset}.xz", buf.getvalue())


def write_plain_text(docs):
    ruth = [text for title, text in docs if title.startswith("Ruth ")]
    with open(os.path.join(HERE, "kjv_ruth.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(ruth) + "\n")


def main():
    docs = [doc for book in BOOKS for doc in chapters(book)]
    write_wiki(docs)
    write_openwebtext(docs)
    write_plain_text(docs)
    print(f"{len(docs)} documents, {sum(len(t.encode()) for _, t in docs) / 1e3:.0f} KB of text")


if __name__ == "__main__":
    main()
