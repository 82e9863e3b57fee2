-- Shared by the scripts that handle lease tokens (included by store.startup.script_text).
-- Tokens are exact: decimal strings compared digit by digit (a Lua number is a double,
-- exact only below 2^53); anything that is not a decimal string counts as 0.
local function canon(s)
  if type(s) ~= 'string' or not string.match(s, '^%d+$') then
    return '0'
  end
  local stripped = string.gsub(s, '^0+', '')
  return stripped == '' and '0' or stripped
end
local function above(a, b)  -- a > b, both canonical
  if #a ~= #b then
    return #a > #b
  end
  return a > b
end
local function plus_one(s)  -- s + 1, s canonical
  local i = #s
  while i > 0 and string.byte(s, i) == 57 do  -- '9' carries
    i = i - 1
  end
  if i == 0 then
    return '1' .. string.rep('0', #s)
  end
  return string.sub(s, 1, i - 1) .. string.char(string.byte(s, i) + 1) .. string.rep('0', #s - i)
end
