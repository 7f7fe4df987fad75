from flask import Flask, Response, jsonify, request, stream_with_context

app = Flask(__name__)


@app.route("/")
def index():
    return jsonify(framework="flask", args=request.args.to_dict(), script_root=request.script_root)


@app.route("/upload", methods=["POST"])
def upload():
    return jsonify(size=len(request.get_data()), form=request.form.to_dict())


@app.route("/stream")
def stream():
    def generate():
        for i in range(3):
            yield f"line {i}\n"
    return Response(stream_with_context(generate()), mimetype="text/plain")


@app.route("/error")
def error():
    raise RuntimeError("flask view failed")
