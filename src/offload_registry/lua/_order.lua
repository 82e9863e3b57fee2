-- Shared by the script that replaces a snapshot (included after _tokens.lua): which of two
-- positions of one session's journal (or claims record) is the later, as codec.watermark_id
-- writes them: device:inode:generation:offset:partial:crc32:mtime_ns.
-- Our writers only append to a file (its offset grows) or replace it (the generation kept in
-- its lock file grows first), and leave it modified no earlier than before; so a position is
-- behind another when it is earlier by those counts and its file was not modified later (a
-- file modified later is someone else's rewrite, or a journal recreated with its lock file).
local function position(id)
  local parts = {}
  for part in string.gmatch(id or '', '[^:]+') do
    parts[#parts + 1] = part
  end
  if #parts ~= 7 then
    return nil  -- no position, or an older format: no telling
  end
  return parts
end
-- 'behind' or 'ahead' of the held position; nil for the same one or no telling (a missing
-- or older-format id, or another file of the same generation: replaced by someone else).
local function order(new, held)
  local n, h = position(new), position(held)
  if n == nil or h == nil or new == held then
    return nil
  end
  local grown_n, grown_h = canon(n[3]), canon(h[3])  -- the generation, across files
  if grown_n == grown_h and n[1] == h[1] and n[2] == h[2] then
    grown_n, grown_h = canon(n[4]), canon(h[4])  -- one file: its offset
  end
  if above(grown_n, grown_h) then
    return 'ahead'
  end
  if above(grown_h, grown_n) and not above(canon(n[7]), canon(h[7])) then
    return 'behind'
  end
  return nil
end
