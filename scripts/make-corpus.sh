#!/usr/bin/env bash
# Builds the demo corpus: the whole King James Bible, one verse per line.
#
# Usage: bash scripts/make-corpus.sh OUTFILE        (e.g. .corpus/kjv.tsv)
#
# The text comes from the Debian package bible-kjv-text (through the `bible`
# program of bible-kjv), whose copyright file says: "This file is provided for
# unrestricted use ... Users may copy, modify or distribute this file at will."
# The King James text itself is public domain in most of the world.
# If `bible` is missing this installs bible-kjv with apt-get (needs root, or
# password-less sudo).
#
# Output: UTF-8 (in fact ASCII), LF line endings, one line per verse:
#   Book C:V<TAB>text
# e.g.  "Genesis 1:1<TAB>In the beginning God created the heaven and the earth."
# Book names are the full English names ("1 Samuel", "Song of Solomon", ...);
# an abbreviation the table below does not know is kept as `bible` prints it.
# Whitespace inside a verse is collapsed to single spaces. The output is
# deterministic for a given bible-kjv-text version (31102 verses, 66 books).
set -euo pipefail
export LC_ALL=C

if [[ $# -ne 1 || -z "$1" ]]; then
  echo "usage: $0 OUTFILE" >&2
  exit 2
fi
out="$1"

die() { echo "make-corpus: error: $*" >&2; exit 1; }

if ! command -v bible >/dev/null 2>&1; then
  echo "make-corpus: 'bible' not found; installing bible-kjv (apt-get)" >&2
  if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    die "need root (or password-less sudo) to run: apt-get install bible-kjv"
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get install -y --no-install-recommends bible-kjv bible-kjv-text >&2 \
    || { "${SUDO[@]}" apt-get update >&2 \
         && "${SUDO[@]}" apt-get install -y --no-install-recommends bible-kjv bible-kjv-text >&2; } \
    || die "apt-get install bible-kjv failed"
  command -v bible >/dev/null 2>&1 || die "'bible' still not found after installing bible-kjv"
fi

outdir=$(dirname -- "$out")
mkdir -p -- "$outdir"
tmp=$(mktemp "$outdir/.make-corpus.XXXXXX")
raw=$(mktemp "$outdir/.make-corpus-raw.XXXXXX")
trap 'rm -f -- "$tmp" "$raw"' EXIT

# stdin from /dev/null and stdout to a file: `bible` then prints no banner and
# no "bible(KJV) [Gen1:1]> " prompts; the awk below drops them anyway.
bible -f 'gen1:1-rev22:21' </dev/null >"$raw" 2>/dev/null || die "'bible -f gen1:1-rev22:21' failed"
[[ -s "$raw" ]] || die "'bible' printed nothing"

awk '
BEGIN {
  OFS = "\t"
  # The abbreviations `bible` prints (bible-kjv 4.x), in canonical order.
  n = split("Ge Exo Lev Num Deu Josh Jdgs Ruth 1Sm 2Sm 1Ki 2Ki 1Chr 2Chr Ezra Neh Est Job " \
            "Psa Prv Eccl SSol Isa Jer Lam Eze Dan Hos Joel Amos Obad Jonah Mic Nahum Hab " \
            "Zep Hag Zec Mal Mat Mark Luke John Acts Rom 1Cor 2Cor Gal Eph Phi Col 1Th 2Th " \
            "1Tim 2Tim Titus Phmn Heb Jas 1Pet 2Pet 1Jn 2Jn 3Jn Jude Rev", ab, " ")
  m = split("Genesis|Exodus|Leviticus|Numbers|Deuteronomy|Joshua|Judges|Ruth|1 Samuel|" \
            "2 Samuel|1 Kings|2 Kings|1 Chronicles|2 Chronicles|Ezra|Nehemiah|Esther|Job|" \
            "Psalms|Proverbs|Ecclesiastes|Song of Solomon|Isaiah|Jeremiah|Lamentations|" \
            "Ezekiel|Daniel|Hosea|Joel|Amos|Obadiah|Jonah|Micah|Nahum|Habakkuk|Zephaniah|" \
            "Haggai|Zechariah|Malachi|Matthew|Mark|Luke|John|Acts|Romans|1 Corinthians|" \
            "2 Corinthians|Galatians|Ephesians|Philippians|Colossians|1 Thessalonians|" \
            "2 Thessalonians|1 Timothy|2 Timothy|Titus|Philemon|Hebrews|James|1 Peter|" \
            "2 Peter|1 John|2 John|3 John|Jude|Revelation", full, "|")
  if (n != 66 || m != 66) { print "make-corpus: internal error: book table" > "/dev/stderr"; exit 3 }
  for (i = 1; i <= n; i++) name[ab[i]] = full[i]
  have = 0; verses = 0; cont = 0; dropped = 0; unknown = 0
}
function flush_verse() {
  if (have) {
    gsub(/[ \t]+/, " ", text); sub(/^ /, "", text); sub(/ $/, "", text)
    print ref, text
    verses++
    have = 0
  }
}
{
  line = $0
  sub(/\r$/, "", line)
  # Prompt lines of interactive mode, possibly followed by a verse.
  while (line ~ /^bible\([^)]*\) *\[[^]]*\]> ?/) sub(/^bible\([^)]*\) *\[[^]]*\]> ?/, "", line)
  if (line ~ /^[ \t]*$/) next
  if (match(line, /^[1-3]?[A-Za-z]+[0-9]+:[0-9]+( |$)/)) {
    flush_verse()
    head = substr(line, 1, RLENGTH); sub(/ $/, "", head)
    text = substr(line, RLENGTH + 1)
    match(head, /[0-9]+:[0-9]+$/)
    book = substr(head, 1, RSTART - 1); cv = substr(head, RSTART)
    if (book in name) book = name[book]; else if (!(book in seen_unknown)) { seen_unknown[book] = 1; unknown++ }
    ref = book " " cv
    have = 1
  } else if (have) {
    # A wrapped verse (not seen with bible-kjv 4.38, handled to be safe).
    text = text " " line; cont++
  } else {
    dropped++  # banner or other text before the first verse
  }
}
END {
  flush_verse()
  printf "make-corpus: %d verses, %d continuation lines, %d lines dropped, %d unknown book abbreviations\n", \
         verses, cont, dropped, unknown > "/dev/stderr"
  for (b in seen_unknown) printf "make-corpus: warning: unknown book abbreviation %s kept\n", b > "/dev/stderr"
}
' "$raw" >"$tmp"

# Sanity checks.
verses=$(wc -l <"$tmp")
books=$(cut -f1 "$tmp" | sed -E 's/ [0-9]+:[0-9]+$//' | uniq | wc -l)
first=$(head -n1 "$tmp" | cut -f1)
last=$(tail -n1 "$tmp" | cut -f1)
empty=$(awk -F'\t' 'NF != 2 || $2 == ""' "$tmp" | wc -l)
(( verses >= 31000 && verses <= 31200 )) || die "expected about 31102 verses, got $verses"
(( books == 66 )) || die "expected 66 books, got $books"
(( empty == 0 )) || die "$empty malformed lines (not 'ref<TAB>text')"
[[ "$first" == "Genesis 1:1" ]] || die "first verse is '$first', expected 'Genesis 1:1'"
[[ "$last" == "Revelation 22:21" ]] || die "last verse is '$last', expected 'Revelation 22:21'"
(( verses == 31102 )) || echo "make-corpus: warning: $verses verses (31102 expected)" >&2

mv -f -- "$tmp" "$out"
chmod 0644 -- "$out"
version=$(dpkg-query -W -f='${Version}' bible-kjv-text 2>/dev/null || echo unknown)
sha=$(sha256sum -- "$out" | cut -d' ' -f1)
echo "make-corpus: wrote $out: $verses verses, $books books, $(wc -c <"$out") bytes," \
     "bible-kjv-text $version, sha256 $sha" >&2
