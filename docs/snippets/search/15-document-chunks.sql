-- One document's chunks in order, with where each sits in the document.
SELECT chunk_no, span_start, span_end, text
FROM vectors_manuals
WHERE id = 'manual-3'
ORDER BY chunk_no;
