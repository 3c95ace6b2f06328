-- wrk script: POST /event as issue #14's tracker sends it (page URL with UTM
-- tags, referrer, screen width, event_id) from four real browsers, so every
-- request goes through enrichment. A user_id keeps the comparison with
-- post_event.lua about enrichment alone.
local counter = 0
local agents = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36",
}
local referrers = {
  "https://www.google.com/search?q=analytics",
  "https://m.facebook.com/story.php?id=7",
  "https://blog.example.org/posts/tools",
  "",
}
-- Each wrk thread has its own Lua state: a thread number keeps event_ids unique.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

request = function()
  counter = counter + 1
  local path = string.format("/p%d", counter % 50)
  local url = "https://site-001.example" .. path
  if counter % 7 == 0 then url = url .. "?utm_source=newsletter&utm_medium=email&utm_campaign=spring" end
  local referrer = referrers[counter % #referrers + 1]
  local body = string.format(
    '{"site_id":"site-001","event_type":"page_view","path":"%s","user_id":"user%d","url":"%s","referrer":"%s","screen_width":%d,"event_id":"%d-%d"}',
    path, counter % 997, url, referrer, 360 + (counter % 4) * 500, thread_number or 0, counter)
  local headers = {["Content-Type"] = "application/json", ["User-Agent"] = agents[counter % #agents + 1]}
  return wrk.format("POST", "/event", headers, body)
end
