# frozen_string_literal: true

# Test handler for batched delivery on the Ruby runtime: the twin of
# runtimes/python/handlers/batch_recorder.py (same variables RECORD_FILE, HANDLER_DELAY_MS,
# RETRY_TIMES, DROP_BODIES, MALFORMED_NTH, EMPTY_ANSWER and the same JSON line per request);
# see that file for their meaning.

require 'base64'
require 'json'

BATCH_LOCK = Mutex.new
BATCH_STATE = { seq: 0, in_progress: 0, file: nil, retried: Hash.new(0) }

def batch_list(name)
  ENV.fetch(name, '').split(',').reject(&:empty?)
end

def batch_pairs(name)
  batch_list(name).to_h do |item|
    body, _, value = item.rpartition('=')
    [body, Integer(value)]
  end
end

def batch_record(line)
  data = "#{JSON.generate(line)}\n"
  BATCH_LOCK.synchronize do
    BATCH_STATE[:file] ||= File.open(ENV.fetch('RECORD_FILE'),
                                     File::WRONLY | File::APPEND | File::CREAT, 0o644)
    BATCH_STATE[:file].syswrite(data)
  end
end

# JSON with sorted keys, compact: as Python's json.dumps(sort_keys=True, separators=(',', ':')).
def sorted_json(v)
  case v
  when Array then "[#{v.map { |x| sorted_json(x) }.join(',')}]"
  when Hash then "{#{v.keys.sort.map { |k| "#{JSON.generate(k)}:#{sorted_json(v[k])}" }.join(',')}}"
  else JSON.generate(v)
  end
end

def entry_body(ev)
  return sorted_json(ev['data']) if ev.key?('data')
  return Base64.decode64(ev['data_base64']).force_encoding('UTF-8').scrub if ev.key?('data_base64')

  nil
end

def handler(event, _context)
  arrival = Time.now.to_f
  seq = concurrent = nil
  BATCH_LOCK.synchronize do
    BATCH_STATE[:seq] += 1
    BATCH_STATE[:in_progress] += 1
    seq = BATCH_STATE[:seq]
    concurrent = BATCH_STATE[:in_progress]
  end
  begin
    batch_handle(event, arrival, seq, concurrent)
  ensure
    BATCH_LOCK.synchronize { BATCH_STATE[:in_progress] -= 1 }
  end
end

def batch_handle(event, arrival, seq, concurrent)
  request = event[:extensions][:request]
  response = event[:extensions][:response]
  raw = request.body.read.to_s
  request.body.rewind
  line = { 'seq' => seq, 'time' => arrival, 'concurrent' => concurrent,
           'content_type' => request.env['CONTENT_TYPE'].to_s, 'bytes' => raw.bytesize,
           'events' => [] }
  delay = Float(ENV['HANDLER_DELAY_MS'] || 0)
  sleep(delay / 1000.0) if delay.positive?
  evs = begin
    JSON.parse(raw.force_encoding('UTF-8'))
  rescue JSON::ParserError
    nil
  end
  line['batch'] = evs.is_a?(Array)
  unless line['batch']
    line['done'] = Time.now.to_f
    batch_record(line)
    return 'ok'
  end
  retry_times = batch_pairs('RETRY_TIMES')
  drops = batch_list('DROP_BODIES')
  answer = {}
  evs.each do |ev|
    body = entry_body(ev)
    part, off = ev.fetch('subject', '').delete_prefix('partition:').split('#')
    key = ev['partitionkey']
    key = Base64.decode64(key).force_encoding('UTF-8').scrub if key && ev['partitionkeyencoding'] == 'base64'
    line['events'] << { 'id' => ev['id'], 'body' => body, 'partition' => Integer(part),
                        'offset' => Integer(off), 'key' => key,
                        'attrs' => ev.reject { |k, _| %w[data data_base64].include?(k) } }
    status = 'SUCCESS'
    BATCH_LOCK.synchronize do
      if BATCH_STATE[:retried][body] < retry_times.fetch(body, 0)
        BATCH_STATE[:retried][body] += 1
        status = 'RETRY'
      end
    end
    status = 'DROP' if drops.include?(body)
    answer[ev['id']] = status
  end
  out = if batch_list('MALFORMED_NTH').include?(seq.to_s)
          line['answer'] = 'malformed'
          '{"statuses": "not a list"}'
        elsif ENV['EMPTY_ANSWER'] == '1'
          line['answer'] = 'empty'
          ''
        else
          line['answer'] = answer
          JSON.generate('statuses' => answer.map { |id, st| { 'entryId' => id, 'status' => st } })
        end
  response['Content-Type'] = 'application/json'
  line['done'] = Time.now.to_f
  batch_record(line)
  out
end
