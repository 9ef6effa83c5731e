# frozen_string_literal: true

# Test handler for the Ruby runtime: the twin of runtimes/python/handlers/recorder.py.
# Same environment variables (RECORD_FILE, FAIL_BODIES, FAIL_NTH, FAIL_KEYS, STATUS_BODIES,
# RETRY_AFTER, HANDLER_DELAY_MS, SLEEP_BODIES, DROP_BODIES, REPLY_BODY, ARRIVAL_FILE) and the
# same JSON line per call (body, body_b64, headers, header_list, raw_headers_b64, time, done,
# seq, concurrent, status, failed, dropped, slept_ms); see recorder.py for their meaning.  A call cut by the
# runtime's Timeout is recorded (status 408) when it is interrupted.

require 'base64'
require 'json'
require 'socket'

RECORDER_LOCK = Mutex.new
RECORDER_STATE = { seq: 0, in_progress: 0, file: nil }

class InjectedFailure < StandardError; end

def env_list(name)
  ENV.fetch(name, '').split(',').reject(&:empty?)
end

def env_pairs(name)
  env_list(name).to_h do |item|
    body, sep, value = item.rpartition('=')
    raise ArgumentError, "#{name}: #{item} is not body=value" if sep.empty?

    [body, Integer(value)]
  end
end

def record_line(line)
  data = "#{JSON.generate(line)}\n"
  RECORDER_LOCK.synchronize do
    RECORDER_STATE[:file] ||= File.open(ENV.fetch('RECORD_FILE'),
                                        File::WRONLY | File::APPEND | File::CREAT, 0o644)
    RECORDER_STATE[:file].syswrite(data)
  end
end

# Python's bytes.decode('utf-8', 'backslashreplace').
def utf8_text(bytes)
  bytes.to_s.dup.force_encoding(Encoding::UTF_8).scrub do |bad|
    bad.bytes.map { |b| format('\\x%02x', b) }.join
  end
end

def parse_raw_headers(raw)
  out = []
  raw.to_s.b.split("\n").each do |line|
    line = line.chomp("\r")
    next if line.empty?

    if line.start_with?(' ', "\t") && !out.empty?
      out[-1][1] += " #{utf8_text(line.strip)}"
      next
    end
    name, value = line.split(':', 2)
    out << [utf8_text(name), utf8_text(value.to_s.gsub(/\A[ \t]+|[ \t]+\z/, ''))]
  end
  out
end

def record_arrival(body, headers, seq, arrival)
  path = ENV['ARRIVAL_FILE']
  return if path.nil? || path.empty?

  line = "#{JSON.generate('body' => body, 'event-id' => headers['event-id'], 'seq' => seq,
                          'time' => arrival)}\n"
  File.open(path, File::WRONLY | File::APPEND | File::CREAT, 0o644) { |f| f.syswrite(line) }
end

def handler(event, context)
  arrival = Time.now.to_f
  seq = concurrent = nil
  RECORDER_LOCK.synchronize do
    RECORDER_STATE[:seq] += 1
    RECORDER_STATE[:in_progress] += 1
    seq = RECORDER_STATE[:seq]
    concurrent = RECORDER_STATE[:in_progress]
  end
  released = false
  # Once only: DROP_BODIES releases before the client can see its connection close.
  release = lambda do
    next if released

    released = true
    RECORDER_LOCK.synchronize { RECORDER_STATE[:in_progress] -= 1 }
  end
  begin
    recorder_handle(event, context, arrival, seq, concurrent, release)
  ensure
    release.call
  end
end

def recorder_handle(event, context, arrival, seq, concurrent, release)
  request = event[:extensions][:request]
  response = event[:extensions][:response]
  raw = request.body.read.to_s.b
  request.body.rewind
  body = utf8_text(raw)
  header_list = parse_raw_headers(request.env['kubeless.raw_headers'])
  headers = {}
  header_list.each do |name, value|
    key = name.downcase
    headers[key] = headers.key?(key) ? "#{headers[key]}, #{value}" : value
  end
  line = { 'body' => body, 'body_b64' => Base64.strict_encode64(raw), 'headers' => headers,
           'header_list' => header_list, 'time' => arrival, 'seq' => seq,
           'concurrent' => concurrent,
           'raw_headers_b64' => Base64.strict_encode64(request.env['kubeless.raw_headers'].to_s) }
  record_arrival(body, headers, seq, arrival)
  recorded = false
  finish = lambda do |status, extra = {}|
    timeout = context.is_a?(Hash) ? context[:timeout] : nil
    status = 408 if status && timeout && Time.now.to_f - arrival >= timeout.to_f
    line.merge!(extra)
    line['status'] = status
    line['failed'] = true if status.nil? || status < 200 || status >= 300
    line['done'] = Time.now.to_f
    recorded = true
    record_line(line)
  end

  begin
    sleep_ms = Float(ENV['HANDLER_DELAY_MS'] || 0) + env_pairs('SLEEP_BODIES').fetch(body, 0)
    if sleep_ms.positive?
      line['slept_ms'] = sleep_ms
      sleep(sleep_ms / 1000.0)
    end

    if env_list('DROP_BODIES').include?(body)
      sock = request.env['kubeless.socket']
      raise 'DROP_BODIES needs the runtime to expose kubeless.socket' if sock.nil?

      finish.call(nil, 'dropped' => true)
      release.call # else the caller's next call can arrive first and count this one
      sock.shutdown(Socket::SHUT_RDWR)
      raise InjectedFailure, "dropped the connection for body #{body.inspect}"
    end

    key = headers['event-key']
    key = utf8_text(Base64.decode64(key)) if key && headers['event-key-encoding'] == 'base64'
    if env_list('FAIL_BODIES').include?(body) || env_list('FAIL_NTH').include?(seq.to_s) ||
       (key && env_list('FAIL_KEYS').include?(key))
      finish.call(500)
      raise InjectedFailure,
            "failing on purpose: call #{seq}, body #{body.inspect}, key #{key.inspect}"
    end

    status = env_pairs('STATUS_BODIES').fetch(body, 200)
    response.status = status
    if [429, 503].include?(status) && ENV['RETRY_AFTER']
      response['Retry-After'] = ENV['RETRY_AFTER']
    end
    reply = ENV['REPLY_BODY']
    response['Content-Type'] = 'application/json' if reply
    finish.call(status)
    reply || 'ok'
  ensure
    # Interrupted, e.g. by the runtime's Timeout (finish makes that a 408).
    finish.call(500) unless recorded
  end
end
