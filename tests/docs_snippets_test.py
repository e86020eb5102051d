#!/usr/bin/python3
"""Checks that every snippet region of a compiled source file appears, word for word, in a doc.

A region is the lines between "// [START name]" and "// [END name]", dedented. Every region
must appear in the document (in a code block, as it is written there); a document that drifts
from the compiled code fails here.

Usage: docs_snippets_test.py DOC.md SNIPPETS.cpp [SNIPPETS.cpp ...]
"""

import re
import sys
import textwrap

START = re.compile(r'^\s*// \[START (.+)\]\s*$')
END = re.compile(r'^\s*// \[END (.+)\]\s*$')


def regions(path):
    found = {}
    name, lines = None, []
    with open(path, encoding='utf-8') as f:
        for line in f:
            if name is None:
                m = START.match(line)
                if m:
                    name, lines = m.group(1), []
                continue
            m = END.match(line)
            if m:
                if m.group(1) != name:
                    sys.exit('%s: [END %s] closes [START %s]' % (path, m.group(1), name))
                found[name] = textwrap.dedent(''.join(lines)).strip('\n')
                name = None
            else:
                lines.append(line)
    if name is not None:
        sys.exit('%s: [START %s] is never closed' % (path, name))
    return found


def main():
    doc_path, sources = sys.argv[1], sys.argv[2:]
    with open(doc_path, encoding='utf-8') as f:
        doc = f.read()
    failed = 0
    total = 0
    for source in sources:
        for name, text in regions(source).items():
            total += 1
            if text not in doc:
                failed += 1
                print('FAIL %s: region "%s" of %s is not in the document as written:\n%s\n' %
                      (doc_path, name, source, text))
    if total == 0:
        print('no snippet regions found in %s' % ', '.join(sources))
        return 1
    print('%d snippets, %d missing from %s' % (total, failed, doc_path))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
