console.log("spa");
