#!/usr/bin/ruby
# frozen_string_literal: true

# Kubeless-style Ruby function runtime (Sinatra on WEBrick), for ktrigger's integration tests.
#
# Modelled on Kubeless' ruby runtime (docker/runtime/ruby/kubeless.rb): it evaluates
# MOD_NAME.rb from MOD_ROOT_PATH in a fresh module, serves FUNC_HANDLER on
# 127.0.0.1:FUNC_PORT and calls it as handler(event, context) for a request on any path with
# any of GET/POST/PUT/PATCH/DELETE (GET /healthz excepted).
#
#   MOD_NAME        file to load, without .rb (e.g. recorder)              required
#   FUNC_HANDLER    method defined in that file (e.g. handler)             required
#   FUNC_PORT       port to listen on (127.0.0.1)                          default 8080
#   FUNC_TIMEOUT    seconds a call may take, else 408                      default 180
#   MOD_ROOT_PATH   directory the file is loaded from                      default ./handlers
#   EXIT_AFTER_TIMEOUT  1: once a 408 for a call past FUNC_TIMEOUT is written, the process
#                   exits (status 0), cutting the calls still in progress, as the real Go
#                   runtime and Ruby's function proxy do
#   FUNC_RUNTIME, FUNC_MEMORY_LIMIT   passed to the handler in its context
#
# The event is Kubeless' {data:, 'event-id':, 'event-type':, 'event-time':, 'event-namespace':,
# extensions: {request:, response:}} (symbol keys): data is the parsed JSON for
# application/json, else the body as a String (UTF-8 if it is valid UTF-8, else binary).  The
# handler's return value is the body (a Hash or Array is sent as JSON); it may set the status
# and headers on extensions[:response] (Sinatra's response).  An exception is a 500 with its
# message; a call over FUNC_TIMEOUT is a 408 (Timeout.timeout, as Kubeless).  Prints
# "listening on 127.0.0.1:PORT" once the socket is bound; exits 0 on SIGTERM/SIGINT.
#
# For tests the Rack env also carries 'kubeless.raw_headers' (the request's header block as
# received) and 'kubeless.socket' (the connection, so a handler can drop it without answering).

require 'json'
require 'timeout'
require 'webrick'
require 'sinatra/base'
require 'rack/handler/webrick'

MOD_NAME = ENV['MOD_NAME']
FUNC_HANDLER = ENV['FUNC_HANDLER']
if MOD_NAME.to_s.empty? || FUNC_HANDLER.to_s.empty?
  abort 'kubeless.rb: MOD_NAME and FUNC_HANDLER must be set'
end
MOD_ROOT_PATH = ENV['MOD_ROOT_PATH'] || File.join(__dir__, 'handlers')
FUNC_PORT = Integer(ENV['FUNC_PORT'] || 8080)
FUNC_TIMEOUT = Float(ENV['FUNC_TIMEOUT'] || 180)
EXIT_AFTER_TIMEOUT = ENV['EXIT_AFTER_TIMEOUT'] == '1'

FUNC_PATH = File.join(MOD_ROOT_PATH, "#{MOD_NAME}.rb")
FUNC_MODULE = Module.new
FUNC_MODULE.module_eval(File.read(FUNC_PATH), FUNC_PATH)
unless FUNC_MODULE.method_defined?(FUNC_HANDLER) ||
       FUNC_MODULE.private_method_defined?(FUNC_HANDLER)
  abort "kubeless.rb: #{FUNC_PATH} has no method #{FUNC_HANDLER}"
end
# The file's methods call each other as functions of the module, as Kubeless' did.
FUNC_MODULE.extend(FUNC_MODULE)

CONTEXT = {
  'function-name': "#{MOD_NAME}.#{FUNC_HANDLER}",
  timeout: FUNC_TIMEOUT,
  runtime: ENV['FUNC_RUNTIME'] || 'ruby3.1',
  'memory-limit': ENV['FUNC_MEMORY_LIMIT']
}.freeze

# Expose the raw header block and the connection to the Rack env (see the header comment).
module KubelessMetaVars
  def meta_vars
    super.merge('kubeless.raw_headers' => raw_header.join, 'kubeless.socket' => @socket)
  end
end
WEBrick::HTTPRequest.prepend(KubelessMetaVars)

# EXIT_AFTER_TIMEOUT: the connection's thread that answered 408 exits once the answer is out.
module KubelessExitAfterTimeout
  def send_response(socket)
    super
    return unless Thread.current[:kubeless_exit]

    socket.flush
    $stdout.puts 'exiting after a 408 (EXIT_AFTER_TIMEOUT)'
    $stdout.flush
    exit!(0)
  end
end
WEBrick::HTTPResponse.prepend(KubelessExitAfterTimeout)

# The Sinatra application calling the function.
class KubelessApp < Sinatra::Base
  set :environment, :production
  set :show_exceptions, false
  set :raise_errors, false
  set :logging, false

  CALLS = { 'failures' => 0, 'timeouts' => 0, 'total' => 0 }
  CALLS_LOCK = Mutex.new

  def self.count(key)
    CALLS_LOCK.synchronize { CALLS[key] += 1 }
  end

  get '/healthz' do
    'OK'
  end

  get '/metrics' do
    content_type 'text/plain; version=0.0.4'
    CALLS_LOCK.synchronize { CALLS.sort.map { |k, v| "runtime_#{k} #{v}\n" }.join }
  end

  helpers do
    def event_data
      raw = request.body.read.to_s.b
      type = request.media_type.to_s.downcase
      if type == 'application/json'
        return raw.empty? ? nil : JSON.parse(raw.dup.force_encoding(Encoding::UTF_8))
      end

      utf8 = raw.dup.force_encoding(Encoding::UTF_8)
      utf8.valid_encoding? ? utf8 : raw
    ensure
      request.body.rewind
    end

    def call_function
      KubelessApp.count('total')
      begin
        data = event_data
      rescue JSON::ParserError => e
        halt 400, "invalid JSON body: #{e.message}"
      end
      event = {
        data: data,
        'event-id': request.env['HTTP_EVENT_ID'],
        'event-type': request.env['HTTP_EVENT_TYPE'],
        'event-time': request.env['HTTP_EVENT_TIME'],
        'event-namespace': request.env['HTTP_EVENT_NAMESPACE'],
        extensions: { request: request, response: response }
      }
      begin
        result = Timeout.timeout(FUNC_TIMEOUT) { FUNC_MODULE.send(FUNC_HANDLER, event, CONTEXT) }
      rescue Timeout::Error
        KubelessApp.count('timeouts')
        Thread.current[:kubeless_exit] = true if EXIT_AFTER_TIMEOUT
        halt 408, 'Timeout while processing the function'
      rescue StandardError, ScriptError => e
        KubelessApp.count('failures')
        halt 500, "#{e.class}: #{e.message}"
      end
      case result
      when nil then ''
      when Hash, Array
        content_type 'application/json'
        JSON.generate(result)
      else result.to_s
      end
    end
  end

  %w[get post put patch delete].each do |verb|
    send(verb, '*') { call_function }
  end
end

server = WEBrick::HTTPServer.new(
  BindAddress: '127.0.0.1', Port: FUNC_PORT,
  Logger: WEBrick::Log.new($stderr, WEBrick::BasicLog::WARN),
  AccessLog: ENV['RUNTIME_ACCESS_LOG'] ? [[$stderr, WEBrick::AccessLog::COMMON_LOG_FORMAT]] : [],
  MaxClients: 256,
  StartCallback: lambda {
    puts "listening on 127.0.0.1:#{FUNC_PORT}"
    $stdout.flush
  }
)
server.mount '/', Rack::Handler::WEBrick, KubelessApp
%w[TERM INT].each { |sig| trap(sig) { server.shutdown } }
server.start
puts 'stopped'
$stdout.flush
exit 0
